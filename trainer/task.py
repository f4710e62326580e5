"""Entry point Vertex AI runs: `python -m trainer.task [flags]`.

Flags are parsed and validated before TensorFlow is imported, so --help and flag errors answer at
once. `run` wires config -> strategy -> data -> model -> loop -> export and is callable with a
hand-made Config.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Sequence

from trainer import preemption
from trainer.config import Config, config_from_flags
from trainer.errors import TrainerError
from trainer.logs import log_to_stdout
from trainer.preemption import Preempted, StopRequest

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class RunResult:
    step: int
    metrics: dict
    export_path: str | None
    examples_per_sec: float | None  # median over progress intervals, the first (tracing) excluded
    weights_digest: str | None  # equal on every replica of a synchronous multi-worker run


def run(config: Config, stop=None) -> RunResult:
    """Runs this process's role per `config`. Raises TrainerError on bad input.

    Chief and multi-worker replicas train (only the chief writes checkpoints, summaries,
    hypertune reports and the export); parameter-server workers and ps tasks serve until
    killed; an evaluator evaluates each new checkpoint. `stop` is a StopRequest polled for
    SIGTERM.
    """
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise in job logs, and so is
    # the warning tf.distribute's own input code raises when it reads dataset options.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    from trainer import distribute

    cluster = config.cluster
    if config.distribution_strategy == "parameter_server" and cluster.task_type in ("worker",
                                                                                   "ps"):
        distribute.serve_forever(cluster)
    if cluster.task_type == "evaluator":
        return _evaluate_checkpoints(config)
    # Multi-worker strategies must exist before any other TensorFlow op.
    strategy = distribute.create_strategy(config)
    if stop is not None:
        # Multi-worker strategies register TensorFlow's own SIGTERM notifier; ours replaces it
        # because the loop makes every replica agree on when to stop.
        stop.install()
    return _train_and_evaluate(config, strategy, stop)


def _sources(config: Config, *flags: str):
    from trainer import data

    files = {"--train-files": config.train_files, "--eval-files": config.eval_files}
    return [data.inspect_input(files[flag], flag, config.image_shape, config.num_classes)
            for flag in flags]


def _train_and_evaluate(config: Config, strategy, stop) -> RunResult:
    import keras

    from trainer import data, distribute, export, loop, models, report, storage

    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    train_source, eval_source = _sources(config, "--train-files", "--eval-files")
    class_names = (export.read_label_map(config.label_map, config.num_classes)
                   if config.label_map else None)
    log.info("training on %d file(s) from --train-files, evaluating on %d from --eval-files",
             len(train_source.files), len(eval_source.files))
    cluster = config.cluster
    chief = cluster.is_chief
    for directory, origin in config.output_origins:
        if chief:
            storage.ensure_writable_dir(directory, origin)

    with strategy.scope():
        # The policy applies to layers as they are built; weights stay float32 either way, so
        # checkpoints do not depend on --mixed-precision.
        if config.mixed_precision == "bf16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = models.build_model(config.model, config.image_shape, config.num_classes,
                                       config.dropout)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        optimizer = models.build_optimizer(config.optimizer, config.learning_rate)
        # Built here, not lazily at the first step: the slots must exist (and be placed by the
        # strategy, on the ps for parameter_server) before a checkpoint is restored into them.
        optimizer.build(model.trainable_variables)
    log.info("model %s: %s parameters, optimizer %s, learning rate %g; variables on %s",
             config.model, f"{model.count_params():,}", config.optimizer, config.learning_rate,
             model.trainable_variables[0].value.device or "this host")
    # Export and parameter-server evaluation work on a plain local float32 copy of the weights,
    # so no distributed variable type or bfloat16 computation reaches the SavedModel.
    local_model = models.build_model(config.model, config.image_shape, config.num_classes,
                                     config.dropout)

    def dataset_fn(source, batch_size, training, num_batches=None):
        return lambda context=None: data.make_dataset(
            source, batch_size=batch_size, training=training, shuffle_buffer=config.shuffle_buffer,
            num_batches=num_batches, seed=config.seed, input_context=context)

    steps = loop.StepFunctions(strategy, model, optimizer, config.batch_size,
                               jit_compile=config.jit_compile)
    train_fn = dataset_fn(train_source, config.batch_size, True)
    eval_fn = dataset_fn(eval_source, config.eval_batch_size, False, config.eval_steps)
    if config.distribution_strategy == "parameter_server":
        trainer = loop.CoordinatedTrainer(steps, train_fn, cluster.num_workers)
        evaluate = loop.LocalCopyEvaluation(model, local_model, eval_fn())
    else:
        trainer = loop.InGraphTrainer(steps, strategy.distribute_datasets_from_function(train_fn))
        evaluate = loop.DistributedEvaluation(
            steps, strategy.distribute_datasets_from_function(eval_fn))

    exporter = export.Exporter(model, local_model, export_dir=config.export_dir,
                               timestamped=config.export_timestamped,
                               image_shape=config.image_shape, best_only=config.export_best_only,
                               class_names=class_names)
    # Constructed on the chief only: cloudml-hypertune creates its metric file's directory.
    actions = [report.HypertuneReporter(config.hypertune_metric).on_evaluation,
               exporter.on_evaluation] if chief else []
    summaries = report.Summaries(config.tensorboard_dir if chief else None)
    # Other replicas take part in saving (a collective) but write to a directory they remove.
    save_dir = config.checkpoint_dir if chief else tempfile.mkdtemp(prefix="trainer-replica-")
    controller = loop.Controller(
        steps=steps, trainer=trainer, evaluate=evaluate,
        max_steps=config.max_steps, eval_every_steps=config.eval_every_steps,
        log_every_steps=config.log_every_steps,
        checkpoint_every_steps=config.checkpoint_every_steps,
        checkpoint_every_secs=config.checkpoint_every_secs,
        checkpoint_dir=config.checkpoint_dir, save_dir=save_dir,
        keep_checkpoints=config.keep_checkpoints,
        batch_size=config.batch_size, metric=config.hypertune_metric,
        higher_is_better=config.metric_higher_is_better, summaries=summaries,
        eval_actions=actions,
        explain_train_error=lambda err: data.explain_pipeline_error(err, train_source),
        explain_eval_error=lambda err: data.explain_pipeline_error(err, eval_source),
        stop=stop, sync_across_workers=config.distribution_strategy == "multi_worker_mirrored",
        checkpoint_options=distribute.checkpoint_options(config))
    try:
        metrics = controller.run()
        if chief:
            exporter.on_finish(controller.step)
    finally:
        summaries.close()
        if not chief:
            shutil.rmtree(save_dir, ignore_errors=True)
    rates = controller.examples_per_sec[1:] or controller.examples_per_sec
    return RunResult(controller.step, metrics, exporter.last_export,
                     statistics.median(rates) if rates else None, _digest(model))


def _digest(model) -> str:
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.tobytes())
    return digest.hexdigest()[:12]


def _evaluate_checkpoints(config: Config) -> RunResult:
    from trainer import data, loop, models, report, storage

    (eval_source,) = _sources(config, "--eval-files")
    storage.ensure_writable_dir(config.tensorboard_dir, dict(config.output_origins)[
        config.tensorboard_dir])
    model = models.build_model(config.model, config.image_shape, config.num_classes,
                               config.dropout)
    dataset = data.make_dataset(eval_source, batch_size=config.eval_batch_size, training=False,
                                num_batches=config.eval_steps)
    summaries = report.Summaries(config.tensorboard_dir, eval_name="evaluator")
    try:
        step, metrics = loop.evaluate_checkpoints(
            model=model, evaluate=loop.LocalCopyEvaluation(None, model, dataset),
            checkpoint_dir=config.checkpoint_dir, max_steps=config.max_steps,
            summaries=summaries, timeout_secs=config.evaluator_timeout_secs,
            explain_error=lambda err: data.explain_pipeline_error(err, eval_source))
    finally:
        summaries.close()
    return RunResult(step, metrics, None, None, None)


def main(argv: Sequence[str] | None = None) -> int:
    log_to_stdout()
    try:
        config = config_from_flags(argv, os.environ)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stop = StopRequest()
    stop.install()
    try:
        result = run(config, stop)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Preempted as err:
        print(f"error: {err}", file=sys.stderr)
        return preemption.EXIT_CODE
    except KeyboardInterrupt:
        print("error: interrupted; the latest checkpoint is kept, rerun to resume", file=sys.stderr)
        return 130
    digest = f" (weights {result.weights_digest})" if result.weights_digest else ""
    log.info("done at step %d: %s%s", result.step,
             ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())), digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
