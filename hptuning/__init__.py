"""Hyperparameter tuning for vertex-trainer, from configs in the shape Vertex AI takes.

    vertex-trainer tune hptuning/cnn.yaml [--max-trials N] -- --train-files ... --eval-files ...
    vertex-trainer tune-submit hptuning/cnn.yaml --project P --set BUCKET=B -- --train-files gs://...

spec: config -> validated TuningSpec; flags: the trainer's flag table; search: algorithms;
tuner: the local study; measurements: hypertune files; results: tables and plot; submit.
"""
