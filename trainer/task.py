"""Entry point Vertex AI runs: `python -m trainer.task [flags]`.

Flags are parsed and validated before TensorFlow is imported, so --help and flag errors answer at
once. `run` wires config -> strategy -> data -> model -> loop -> export and is callable with a
hand-made Config.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Sequence

from trainer.config import Config, config_from_flags
from trainer.errors import TrainerError

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class RunResult:
    step: int
    metrics: dict
    export_path: str | None
    examples_per_sec: float | None  # median over progress intervals, the first (tracing) excluded


def run(config: Config) -> RunResult:
    """Trains and evaluates per `config`; the chief exports. Raises TrainerError on bad input."""
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise in job logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from trainer import data, distribute, export, loop, models, report, storage

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    strategy = distribute.create_strategy(config)
    train_source = data.inspect_input(config.train_files, "--train-files", config.image_shape,
                                      config.num_classes)
    eval_source = data.inspect_input(config.eval_files, "--eval-files", config.image_shape,
                                     config.num_classes)
    log.info("training on %d file(s) from --train-files, evaluating on %d from --eval-files",
             len(train_source.files), len(eval_source.files))
    chief = config.cluster.is_chief
    for directory, origin in config.output_origins:
        if chief or directory == config.checkpoint_dir:
            storage.ensure_writable_dir(directory, origin)

    with strategy.scope():
        model = models.build_model(config.model, config.image_shape, config.num_classes,
                                   config.dropout)
        optimizer = models.build_optimizer(config.optimizer, config.learning_rate)
        # Built here, not lazily at the first step: the slots must exist (and be placed by the
        # strategy) before a checkpoint is restored into them.
        optimizer.build(model.trainable_variables)
    log.info("model %s: %s parameters, optimizer %s, learning rate %g", config.model,
             f"{model.count_params():,}", config.optimizer, config.learning_rate)

    def dataset(source, batch_size, training, num_batches=None):
        return strategy.distribute_datasets_from_function(
            lambda context: data.make_dataset(
                source, batch_size=batch_size, training=training,
                shuffle_buffer=config.shuffle_buffer, num_batches=num_batches, seed=config.seed,
                input_context=context))

    exporter = export.Exporter(model, export_dir=config.export_dir,
                               timestamped=config.export_timestamped,
                               image_shape=config.image_shape, best_only=config.export_best_only)
    actions = [report.HypertuneReporter(config.hypertune_metric).on_evaluation, exporter.on_evaluation]
    summaries = report.Summaries(config.tensorboard_dir if chief else None)
    controller = loop.Controller(
        steps=loop.StepFunctions(strategy, model, optimizer, config.batch_size),
        train_dataset=dataset(train_source, config.batch_size, True),
        eval_dataset=dataset(eval_source, config.eval_batch_size, False, config.eval_steps),
        max_steps=config.max_steps, eval_every_steps=config.eval_every_steps,
        log_every_steps=config.log_every_steps,
        checkpoint_every_steps=config.checkpoint_every_steps,
        checkpoint_every_secs=config.checkpoint_every_secs,
        checkpoint_dir=config.checkpoint_dir, keep_checkpoints=config.keep_checkpoints,
        batch_size=config.batch_size, metric=config.hypertune_metric,
        higher_is_better=config.metric_higher_is_better, summaries=summaries,
        eval_actions=actions if chief else [],
        explain_train_error=lambda err: data.explain_pipeline_error(err, train_source),
        explain_eval_error=lambda err: data.explain_pipeline_error(err, eval_source))
    try:
        metrics = controller.run()
        if chief:
            exporter.on_finish(controller.step)
    finally:
        summaries.close()
    rates = controller.examples_per_sec[1:] or controller.examples_per_sec
    return RunResult(controller.step, metrics, exporter.last_export,
                     statistics.median(rates) if rates else None)


def _log_progress_to_stdout() -> None:
    # Vertex files stdout as INFO and stderr as ERROR; only our own loggers speak at INFO, so
    # TensorFlow's INFO chatter stays out of the job log.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    _log_progress_to_stdout()
    try:
        config = config_from_flags(argv, os.environ)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = run(config)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the latest checkpoint is kept, rerun to resume", file=sys.stderr)
        return 130
    log.info("done at step %d: %s", result.step,
             ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
