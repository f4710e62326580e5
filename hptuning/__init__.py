"""Hyperparameter tuning for vertex-trainer, from configs in the shape Vertex AI takes.

    python -m hptuning hptuning/cnn.yaml --output-dir DIR [-- TRAINER_FLAGS]   # run locally
    python -m hptuning.submit hptuning/cnn.yaml --project P --set BUCKET=B     # on Vertex AI

spec: config -> validated TuningSpec; flags: the trainer's flag table; search: algorithms;
tuner: the local study; measurements: hypertune files; results: tables and plot; submit.
"""
