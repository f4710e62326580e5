"""Entry point Vertex AI runs: `python -m trainer.task [flags]`.

Flags are parsed and validated before TensorFlow is imported, so --help and flag errors answer at
once. `run` wires config -> strategy -> data -> model -> loop -> export and is callable with a
hand-made Config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn, Sequence

from trainer.cli import exit_with, run_cli, usage_errors
from trainer.config import Config, RecipeConfig, config_from_flags, with_data_size
from trainer.logs import log_to_stdout
from trainer.preemption import StopRequest

if TYPE_CHECKING:  # these import TensorFlow
    from trainer.checkpoints import Checkpoints
    from trainer.export import Exporter
    from trainer.report import Progress
    from trainer.results import Results

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class RunResult:
    step: int
    metrics: dict
    export_path: str | None
    examples_per_sec: float | None  # median over progress intervals, the first (tracing) excluded
    weights_digest: str | None  # equal on every replica of a synchronous multi-worker run
    evaluations: tuple = ()  # loop.Evaluation of each evaluation this process made
    export_seconds: float = 0.0
    test_metrics: dict | None = None  # --test-files, evaluated once at the end


def run(config: Config, stop: StopRequest | None = None) -> RunResult:
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
    log.info("%s", config.data.files.note)
    from trainer import tf_start

    tf_start.start()
    from trainer import distribute

    role = config.cluster.role
    if config.cluster.strategy.coordinated and role.task_type in ("worker", "ps"):
        distribute.serve_forever(role)
    if role.task_type == "evaluator":
        return _evaluate_checkpoints(config)
    # Multi-worker strategies must exist before any other TensorFlow op.
    strategy = distribute.create_strategy(config.cluster, config.model.batch_size)
    if stop is not None:
        # Multi-worker strategies register TensorFlow's own SIGTERM notifier; ours replaces it
        # because the loop makes every replica agree on when to stop.
        stop.install()
    return _train_and_evaluate(config, strategy, stop)


def _train_and_evaluate(config: Config, strategy, stop) -> RunResult:
    import keras
    import tensorflow as tf

    from trainer import data, export, loop, memory, models, runner, storage

    if config.model.seed is not None:
        keras.utils.set_random_seed(config.model.seed)
    precision = _choose_precision(config)
    plan, config = _data_plan(config)
    memory.check(config, plan, half_precision=precision.precision != "none",
                 on_accelerator=config.cluster.strategy.on_tpu
                 or bool(tf.config.list_physical_devices("GPU")))
    class_names = list(plan.class_names) if plan.class_names else None
    cache = _cache(config, plan)
    outputs, role = config.outputs, config.cluster.role
    if role.is_chief:
        for directory, origin in outputs.origins:
            storage.ensure_writable_dir(directory, origin)
        if not outputs.job_dir_given and "--job-dir" in dict(outputs.origins).values():
            log.info("job dir %s (no --job-dir: one per model, input and training data, so "
                     "this command run again resumes there)", outputs.job_dir)
    _claim_checkpoints(config, plan, write=role.is_chief)
    misfit = models.misfit(config.model.name, config.data.image_shape, plan.num_classes)
    if misfit:
        log.warning("%s", misfit)
    skipped = data.SkippedImages() if config.data.skip_corrupt_images else None

    model, optimizer, local_model = _build_models(config, strategy.tf_strategy,
                                                  precision.policy, plan.num_classes)
    loss_scale = _loss_scale(strategy.tf_strategy) if precision.loss_scaling else None
    steps = loop.StepFunctions(strategy.tf_strategy, model, optimizer, config.model.batch_size,
                               jit_compile=config.model.jit_compile, loss_scale=loss_scale,
                               **_recipe_step_options(config.recipe, model))
    inputs = runner.Inputs(config.data, config.model.seed, skipped, cache)
    trainer = runner.build_trainer(inputs, steps, plan.train, config.model.batch_size,
                                   coordinated=strategy.coordinated,
                                   num_workers=role.num_workers)
    evaluations = runner.Evaluations(
        inputs, steps, config.model.eval_batch_size,
        averaged=config.recipe.ema_decay is not None,
        local_model=local_model if strategy.evaluates_local_copy else None)
    evaluation = evaluations(plan.eval, config.loop.eval_steps)
    test_evaluation = evaluations(plan.test) if plan.test is not None else None
    with _outputs(config, strategy, steps, local_model, class_names, plan.num_classes,
                  skipped) as written:
        controller = loop.Controller(
            trainer=trainer, evaluation=evaluation, checkpoints=written.checkpoints,
            schedule=config.loop, train_actions=written.train_actions,
            eval_actions=written.eval_actions, stop=stop,
            loss_upper_bound=config.loop.loss_upper_bound, loss_scale=loss_scale,
            vote=loop.vote_across_workers(strategy.tf_strategy) if strategy.votes else None,
            agree=_replica_agreement(strategy, model))
        last = controller.run()
        test = None
        if test_evaluation is not None:
            test = loop.evaluate(test_evaluation, controller.step, [lambda result: _report_test(
                result, outputs.tensorboard_dir if role.is_chief else None)])
        if written.results is not None:
            written.results.final(last, "eval")
            if test is not None:
                written.results.final(test, "test")
            written.results.curves(controller.step)
        if role.is_chief and not outputs.export_best_only:
            written.export(controller.step)
    rates = written.progress.examples_per_sec[1:] or written.progress.examples_per_sec
    return RunResult(controller.step, last.metrics, written.exporter.last_export,
                     statistics.median(rates) if rates else None,
                     export.weights_digest(model.get_weights()),
                     tuple(controller.evaluations), written.exporter.seconds,
                     test.metrics if test else None)


def _data_plan(config: Config):
    """The run's sources (logged), and the config with its epochs resolved against them."""
    from trainer import data

    plan = data.resolve(config.data)
    log.info("training on %s; evaluating on %s%s; %d classes", data.describe(plan.train),
             data.describe(plan.eval),
             f"; testing on {data.describe(plan.test)}" if plan.test else "", plan.num_classes)
    config = with_data_size(config, plan.train.size)
    loop_config = config.loop
    if loop_config.steps_per_epoch:
        log.info("%s step(s) of %s examples: %s of %s (%s)",
                 f"{loop_config.max_steps:,}", f"{config.model.batch_size:,}",
                 loop_config.epochs_note(), f"{plan.train.size:,}",
                 loop_config.evaluation_note())
    return plan, config


def _claim_checkpoints(config: Config, plan, write: bool) -> None:
    """Stops a run whose checkpoint directory holds another run's work (run_record)."""
    from trainer import run_record

    outputs = config.outputs
    run_record.claim(outputs.checkpoint_dir, run_record.record_of(config, plan),
                     dict(outputs.origins)[outputs.checkpoint_dir],
                     restart_from_scratch=config.loop.restart_from_scratch, write=write)


def _cache(config: Config, plan):
    """--cache of the training data and of evaluations that read the whole eval set (a part
    of it would never complete a cache), sized for this task's share, or None."""
    from trainer.data import cache

    role = config.cluster.role
    sources = [plan.train] + ([plan.eval] if config.loop.eval_steps is None else [])
    chosen = cache.plan(config.data.cache, sources, job_dir=config.outputs.job_dir,
                        pipelines=max(1, role.num_workers + len(role.spec.get("chief", ()))))
    if chosen is not None:
        log.info("%s", chosen.note)
    return chosen


def _replica_agreement(strategy, model):
    """What makes the replicas' own copies of the model's statistics equal, if they have any."""
    from trainer import loop

    own = [w for w in model.non_trainable_weights if "float" in w.dtype]
    if not (own and strategy.replicas_keep_own_state):
        return None
    return loop.average_across_replicas(strategy.tf_strategy, own)


def _loss_scale(strategy):
    """fp16's dynamic loss scale, its variables placed by the strategy."""
    from trainer.loss_scale import DynamicLossScale

    with strategy.scope():
        return DynamicLossScale()


@dataclass(frozen=True)
class _Outputs:
    """What a training run writes and reports, as the controller and the end of the run use it."""

    checkpoints: Checkpoints
    train_actions: list
    eval_actions: list
    export: Callable[[int], str | None]  # the SavedModel of a step (--ema-decay: averaged)
    exporter: Exporter  # for last_export and seconds
    progress: Progress  # for examples_per_sec
    results: Results | None  # the chief's per-class tables, confusion matrices and curves


@contextlib.contextmanager
def _outputs(config: Config, strategy, steps, local_model, class_names, num_classes: int,
             skipped) -> Iterator[_Outputs]:
    """Checkpoints (every replica saves; only the chief's are kept), progress lines, and on the
    chief summaries, hypertune reports, the skipped-images report, the results (history and
    per-class tables) and the export (at each new best metric with --export-best-only). Closes
    the summaries and removes a replica's throwaway checkpoints on leaving."""
    import tensorflow as tf

    from trainer import data, export, loop, report, results
    from trainer.checkpoints import Checkpoints

    chief = config.cluster.role.is_chief
    outputs, loop_config = config.outputs, config.loop
    model, optimizer, loss_scale = steps.model, steps.optimizer, steps.loss_scale
    with strategy.tf_strategy.scope():
        best = loop.BestMetric(outputs.hypertune_metric, outputs.metric_higher_is_better)
    # Other replicas take part in saving (a collective) but write to a directory they remove.
    save_dir = outputs.checkpoint_dir if chief else tempfile.mkdtemp(prefix="trainer-replica-")
    checkpoints = Checkpoints(
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=steps.step,
                            best_metric=best.variable),
        steps.step, directory=outputs.checkpoint_dir, save_dir=save_dir,
        keep=loop_config.keep_checkpoints, options=strategy.checkpoint_options,
        restart_from_scratch=loop_config.restart_from_scratch,
        optional={"loss_scale": loss_scale.checkpointed} if loss_scale else None)
    progress = report.Progress(loop_config.max_steps, loop_config.steps_per_epoch)
    summaries = report.Summaries(outputs.tensorboard_dir if chief else None,
                                 learning_rate=steps.learning_rate,
                                 loss_scale=loss_scale.value if loss_scale else None)
    exporter = export.Exporter(model, local_model, export_dir=outputs.export_dir,
                               timestamped=outputs.export_timestamped,
                               image_shape=config.data.image_shape, class_names=class_names)
    export_step = exporter.export
    if config.recipe.ema_decay is not None:
        export_step = _with_averaged_weights(exporter.export, model, optimizer)
    eval_actions = [progress.on_evaluation, best]
    train_actions = [progress.on_train, summaries.on_train]
    run_results = None
    if chief:
        run_results = results.Results(outputs.results_dir, outputs.tensorboard_dir, class_names,
                                      num_classes)
        train_actions += [run_results.history.on_train, run_results.one_class.on_train]
        eval_actions += [run_results.history.on_evaluation, run_results.one_class.on_evaluation]
        exporter.remove_leftovers()
        # Constructed on the chief only: cloudml-hypertune creates its metric file's directory.
        eval_actions += [summaries.on_evaluation,
                         report.HypertuneReporter(outputs.hypertune_metric).on_evaluation]
        if skipped is not None:
            eval_actions.append(data.SkipReport(skipped, outputs.tensorboard_dir).on_evaluation)
        if outputs.export_best_only:
            best.on_improvement.append(lambda evaluation: export_step(evaluation.step))
    try:
        yield _Outputs(checkpoints, train_actions, eval_actions, export_step, exporter, progress,
                       run_results)
    finally:
        summaries.close()
        if not chief:
            shutil.rmtree(save_dir, ignore_errors=True)


def _report_test(result, tensorboard_dir: str | None) -> None:
    """The --test-files evaluation: one log line, and (chief) scalars under logs/test."""
    from trainer import report

    log.info("test at step %d: accuracy %.2f%%  loss %.4f  (%s examples, %.1f s)", result.step,
             100 * result.metrics["accuracy"], result.metrics["loss"], f"{result.examples:,}",
             result.seconds)
    summaries = report.Summaries(tensorboard_dir, eval_name="test")
    summaries.on_evaluation(result)
    summaries.close()


def _with_averaged_weights(export, model, optimizer):
    from trainer import ema

    def averaged_export(step):
        with ema.averaged_weights(model, optimizer):
            return export(step)

    return averaged_export


def _recipe_step_options(recipe: RecipeConfig, model) -> dict:
    """Label smoothing and, with a frozen backbone, the head's variables."""
    options = {"label_smoothing": recipe.label_smoothing}
    if recipe.freeze_backbone_steps:
        from trainer.models import applications

        frozen = {id(v) for v in applications.backbone_of(model).trainable_variables}
        options.update(head_only_steps=recipe.freeze_backbone_steps,
                       head_variables=[v for v in model.trainable_variables
                                       if id(v) not in frozen])
    return options


def _choose_precision(config: Config):
    """--mixed-precision resolved for this task's devices, logged with why (warned if slow)."""
    from trainer import distribute, precision

    chosen = precision.choose(config.model.mixed_precision,
                              distribute.device_facts(config.cluster.strategy.on_tpu))
    log.info("mixed precision %s (%s)", chosen.precision, chosen.reason)
    if chosen.warning:
        log.warning("%s", chosen.warning)
    return chosen


def _build_models(config: Config, strategy, policy: str, num_classes: int):
    """The model and optimizer under the strategy, and a plain local float32 copy of the model.

    Export and parameter-server evaluation work on the copy, so no distributed variable type
    or bfloat16 computation reaches the SavedModel. A float32 model under the default strategy
    is already such a model and serves as its own copy (building a `cnn` copy costs ~40 MB).
    """
    import keras
    import tensorflow as tf

    from trainer import models
    from trainer.warm_start import warm_start

    recipe, settings, shape = config.recipe, config.model, config.data.image_shape
    with strategy.scope():
        # The policy applies to layers as they are built; weights stay float32 either way, so
        # checkpoints do not depend on --mixed-precision.
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = models.build_model(settings.name, shape, num_classes, settings.dropout,
                                       weights=recipe.pretrained_weights)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        if recipe.init_checkpoint:
            warm_start(model, recipe.init_checkpoint)
        optimizer = _build_optimizer(config, model)
    log.info("model %s: %s parameters, %s per example forward, optimizer %s, learning rate "
             "%g; variables on %s", settings.name, f"{model.count_params():,}",
             models.footprint.flops_text(
                 models.MODELS[settings.name].footprint(shape, num_classes).flops),
             settings.optimizer, settings.learning_rate,
             model.trainable_variables[0].value.device or "this host")
    if policy == "float32" and strategy is tf.distribute.get_strategy():
        return model, optimizer, model
    local_model = models.build_model(settings.name, shape, num_classes, settings.dropout)
    return model, optimizer, local_model


def _build_optimizer(config: Config, model):
    """The optimizer of the run (with --ema-decay, also the keeper of the averaged weights)."""
    from trainer import models, schedules

    recipe = config.recipe
    optimizer = models.build_optimizer(
        config.model.optimizer,
        schedules.learning_rate(recipe, config.model.learning_rate, config.loop.max_steps),
        weight_decay=recipe.weight_decay, clip_norm=recipe.clip_norm, ema_decay=recipe.ema_decay)
    # Built here, not lazily at the first step: the slots must exist (and be placed by the
    # strategy, on the ps for parameter_server) before a checkpoint is restored into them.
    optimizer.build(model.trainable_variables)
    return optimizer


def _evaluate_checkpoints(config: Config) -> RunResult:
    """The evaluator task: its own summaries run (`evaluator/`), no hypertune, no export.

    It evaluates as the chief does (the same factory): with --ema-decay the optimizer's
    averaged weights are restored from each checkpoint and evaluated.
    """
    import tensorflow as tf

    from trainer import data, loop, models, report, runner, storage
    from trainer.checkpoints import Checkpoints

    plan, config = _data_plan(config)
    outputs = config.outputs
    storage.ensure_writable_dir(outputs.tensorboard_dir,
                                dict(outputs.origins)[outputs.tensorboard_dir])
    _claim_checkpoints(config, plan, write=False)
    model = models.build_model(config.model.name, config.data.image_shape, plan.num_classes,
                               config.model.dropout)
    averaged = config.recipe.ema_decay is not None
    optimizer = _build_optimizer(config, model) if averaged else None
    steps = loop.StepFunctions(tf.distribute.get_strategy(), model, optimizer)
    skipped = data.SkippedImages() if config.data.skip_corrupt_images else None
    evaluations = runner.Evaluations(runner.Inputs(config.data, config.model.seed, skipped),
                                     steps, config.model.eval_batch_size, averaged=averaged)
    state = {"model": model, "step": steps.step}
    if optimizer is not None:
        state["optimizer"] = optimizer
    summaries = report.Summaries(outputs.tensorboard_dir, eval_name="evaluator")
    try:
        last = loop.evaluate_checkpoints(
            checkpoints=Checkpoints(tf.train.Checkpoint(**state), steps.step,
                                    directory=outputs.checkpoint_dir),
            evaluation=evaluations(plan.eval, config.loop.eval_steps),
            max_steps=config.loop.max_steps,
            eval_actions=[report.Progress.on_evaluation, summaries.on_evaluation],
            timeout_secs=config.cluster.evaluator_timeout_secs)
    finally:
        summaries.close()
    return RunResult(last.step, last.metrics, None, None, None, (last,))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _main(argv), interrupted="interrupted; the latest checkpoint is "
                                                    "kept, rerun to resume")


def _main(argv: Sequence[str] | None) -> None:
    log_to_stdout()
    with usage_errors():
        config = config_from_flags(argv, os.environ)
    stop = StopRequest()
    stop.install()
    result = run(config, stop)
    digest = f" (weights {result.weights_digest})" if result.weights_digest else ""
    log.info("done at step %d: %s%s", result.step,
             ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())), digest)


def cli() -> NoReturn:
    """`python -m trainer.task`, as Vertex runs it."""
    exit_with(main())


if __name__ == "__main__":
    cli()
