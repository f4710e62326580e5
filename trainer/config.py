"""Flags + Vertex environment -> one validated `Config` in sections (pure Python: no TensorFlow).

The sections mirror the flag groups of `--help`: data, model, recipe, loop, cluster, outputs.
Each field carries its own flag (trainer.options), and the parser is made from the sections, so
a new flag is one field. Values that depend on other flags, the environment or the model (the
model's default optimizer, learning rate, dropout and weight decay, the eval batch size, the
checkpoint interval, the data files, the strategy, the output directories) are resolved once,
in `config_from_flags`; modules take the section they need. --epochs and --eval-every-epochs
need the training data's size: `with_data_size` turns them into steps once the sources are
inspected, before anything reads the loop's steps.

Hyperparameter-tuning services append `--<parameterId>=<value>`, so every flag also accepts its
underscore spelling (`--learning_rate`). Unknown or abbreviated flags are errors: a mistyped
hyperparameter must never be silently ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from trainer import run_record
from trainer.cli import OneLineParser
from trainer.cluster import Cluster, resolve_cluster
from trainer.data.cache import CHOICES as CACHE_CHOICES
from trainer.data.vertex_env import DataFiles, resolve_data_files
from trainer.errors import TrainerError
from trainer.models import MODELS, OPTIMIZERS, ModelSpec
from trainer.options import (FRACTION, NOT_NEGATIVE, POSITIVE, Check, Option, add_section,
                             flag, given, integer, number, options_of, resolved)
from trainer.precision import CHOICES as MIXED_PRECISION
from trainer.storage import dirname, is_url, join
from trainer.strategies import COLLECTIVES, STRATEGIES, StrategySpec, resolve as resolve_strategy

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_TRAIN_FILES = str(SAMPLE_DIR / "train-*.tfrecord.gz")
SAMPLE_EVAL_FILES = str(SAMPLE_DIR / "eval-*.tfrecord.gz")
DEFAULT_JOB_DIR = "trainer-output"
# metric name -> whether larger is better
METRICS = {"accuracy": True, "loss": False}
LR_SCHEDULES = ("constant", "cosine", "step", "linear")
# --seed reaches NumPy's global generator (keras.utils.set_random_seed), whose seeds are 32-bit.
SEED = Check(lambda value: 0 <= value < 2 ** 32, "must be in [0, 4,294,967,295]")
# The largest step count every consumer holds exactly: tuning services send integer parameters
# as doubles, and JSON readers parse numbers as doubles, which skip integers beyond 2^53. Even at
# 1 us a step (the fastest trainer step measured here took 2.6 ms) it is 285 years of training.
MAX_STEPS = 2 ** 53
STEPS = Check(lambda value: 0 < value <= MAX_STEPS,
              f"must be positive and at most 2^53 = {MAX_STEPS:,}")
DEFAULT_MAX_STEPS = 1000  # without --epochs
DEFAULT_EVAL_EVERY_STEPS = 500  # without --eval-every-epochs or --epochs
AUGMENT_MIN_AREA = 0.5


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What the run trains, evaluates and tests on, and how images are read."""

    files: DataFiles = resolved(
        Option("train-files", metavar="PATTERNS",
               help="comma-separated globs (local, /gcs/..., gs://...) of TFRecords (raw pixels "
                    "or image/encoded), JSONL/CSV image manifests, or one folder "
                    "ROOT/CLASS/image; default: $AIP_TRAINING_DATA_URI with $AIP_DATA_FORMAT, "
                    "else the bundled MNIST sample"),
        Option("eval-files", metavar="PATTERNS",
               help="as --train-files; default: $AIP_VALIDATION_DATA_URI with $AIP_DATA_FORMAT"),
        Option("test-files", metavar="PATTERNS",
               help="as --train-files, evaluated once at the end; default: $AIP_TEST_DATA_URI "
                    "with $AIP_DATA_FORMAT"),
        Option("bundled-sample", False, switch=True,
               help="train the bundled MNIST sample when no data is given, also inside a "
                    "Vertex job (where no data is otherwise an error)"))
    image_shape: tuple[int, int, int] = resolved(
        Option("image-height", 28, integer, check=POSITIVE,
               help="encoded images are resized (and centre-cropped) to this"),
        Option("image-width", 28, integer, check=POSITIVE),
        Option("image-channels", 1, integer, check=POSITIVE,
               help="the records' `depth`; encoded images convert (grey <-> RGB)"))
    num_classes: int | None = flag(
        "num-classes", type=integer, check=Check(lambda value: value >= 2, "must be at least 2"),
        help="labels must lie in [0, N); default: the label map's size (class names in the "
             "training data, --label-map, or labels.txt beside the records), else 10")
    shuffle_buffer: int = flag("shuffle-buffer", 10_000, integer, check=POSITIVE,
                               help="records (training only)")
    augment: bool = flag("augment", False, switch=True,
                         help="training images (encoded sources): random resized crop and "
                              "horizontal flip")
    augment_min_area: float = flag(
        "augment-min-area", type=number,
        check=Check(lambda value: 0 < value <= 1, "must be in (0, 1]"),
        help="with --augment: the smallest crop, as a fraction of the image's area (crops "
             f"take MIN-100%%); default {AUGMENT_MIN_AREA:g}. ImageNet recipes use 0.08, "
             "which loses the object of small images")
    cache: str | None = flag(
        "cache", choices=CACHE_CHOICES,
        help="keep decoded, resized images (folders, manifests, encoded TFRecords) after their "
             "first read, for later epochs and evaluations: in memory (checked to fit) or on "
             "disk (under --job-dir, or a local temporary directory when that is on Cloud "
             "Storage); augmentation then crops the kept image")
    skip_corrupt_images: bool = flag(
        "skip-corrupt-images", False, switch=True,
        help="drop images that cannot be read, decoded or resized to cover the model's input "
             "(an aspect ratio over 64 times its own), counting them (log and TensorBoard), "
             "instead of stopping with an error")
    label_map: str | None = flag(
        "label-map", metavar="PATH",
        help="one class name per line (line i names class i); adds a `labels` output to the "
             "export and writes labels.txt beside it")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The network, its optimizer and how each step computes."""

    name: str = flag("model", "cnn", choices=tuple(sorted(MODELS)),
                     help="; ".join(f"{n}: {s.description}" for n, s in MODELS.items()))
    optimizer: str = flag("optimizer", choices=OPTIMIZERS,
                          help="default: the model's tutorial optimizer")
    learning_rate: float = flag("learning-rate", type=number, check=POSITIVE,
                                help="default: the model's tutorial value")
    dropout: float = flag("dropout", type=number, check=FRACTION,
                          help="rate of the dropout before the output layer; default: the "
                               "model's tutorial value")
    batch_size: int = flag("batch-size", 100, integer, check=POSITIVE,
                           help="global batch size, split across all replicas")
    eval_batch_size: int = flag("eval-batch-size", type=integer, check=POSITIVE,
                                help="global; default: --batch-size")
    seed: int | None = flag("seed", type=integer, check=SEED,
                            help="seed for weights, dropout and shuffling (training records "
                                 "still arrive in the order parallel reads finish, so runs "
                                 "differ slightly)")
    mixed_precision: str = flag(
        "mixed-precision", "auto", choices=MIXED_PRECISION,
        help="compute precision (weights, checkpoints and the export stay float32). auto: bf16 "
             "on TPUs, GPUs of compute capability >= 8.0 and CPUs with AMX-BF16; fp16 with "
             "dynamic loss scaling on 7.x GPUs (T4, V100); else none. bf16/fp16 where the "
             "device lacks them train (slowly) with a warning")
    jit_compile: bool = flag("jit-compile", False, switch=True,
                             help="compile each training step with XLA")


@dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    """How the weights are initialized and optimized beyond the optimizer and learning rate.

    The learning rate follows `lr_schedule` after `warmup_steps` of linear warm-up. With
    `freeze_backbone_steps`, only the head trains for that many steps at the learning rate, then
    the whole net at `fine_tune_learning_rate`, the schedule starting over for that phase.
    """

    lr_schedule: str = flag("lr-schedule", "constant", choices=LR_SCHEDULES,
                            help="learning-rate decay over the run (after --warmup-steps): "
                                 "cosine to 0, step (x0.1 at 50%% and 75%% of the steps), "
                                 "linear to 0")
    warmup_steps: int = flag("warmup-steps", 0, integer,
                             help="steps of linear warm-up from 0 to --learning-rate")
    weight_decay: float = flag("weight-decay", type=number, check=NOT_NEGATIVE,
                               help="decoupled weight decay (adam becomes AdamW), not applied to "
                                    "biases and normalization parameters; default: the model's "
                                    "(1e-4 for the ResNets, else 0)")
    label_smoothing: float = flag("label-smoothing", 0.0, number, check=FRACTION,
                                  help="training loss against labels smoothed by this much "
                                       "(0: none)")
    clip_norm: float | None = flag("clip-norm", type=number, check=POSITIVE,
                                   help="clip gradients to this global norm")
    ema_decay: float | None = flag("ema-decay", type=number, check=FRACTION,
                                   help="keep an exponential moving average of the weights with "
                                        "this decay (e.g. 0.999); evaluations and the export "
                                        "use the averaged weights")
    pretrained_weights: str | None = flag(
        "pretrained-weights", metavar="imagenet|PATH",
        help="backbone models: 'imagenet' (downloaded by Keras at run time) or a .weights.h5 "
             "file written by the backbone's save_weights")
    init_checkpoint: str | None = flag(
        "init-checkpoint", metavar="PATH",
        help="warm start from another run's checkpoint (a checkpoint prefix or a directory "
             "holding checkpoints): the variables whose name and shape match are loaded, and "
             "listed in the log; ignored when --job-dir holds checkpoints to resume")
    freeze_backbone_steps: int = flag("freeze-backbone-steps", 0, integer,
                                      help="backbone models: train only the head for this many "
                                           "steps, then the whole net at "
                                           "--fine-tune-learning-rate")
    fine_tune_learning_rate: float | None = flag(
        "fine-tune-learning-rate", type=number, check=POSITIVE,
        help="learning rate once the backbone is unfrozen; default: --learning-rate / 10")


def _whole_steps(steps: float) -> int:
    """Steps rounded up, so that a fraction of an epoch's steps is trained (or ends) whole; a
    hair above an integer (float error) does not count."""
    return math.ceil(steps - 1e-9)


def _next(step: int, every: float) -> int:
    """The first step after `step` that ends a period of `every` steps. A fractional period
    (epochs of a size not a multiple of the batch) ends on the step that completes it, rounded
    up as --epochs is, so the period that ends the run ends on its final step."""
    period = int(step // every) + 1
    while (due := _whole_steps(period * every)) <= step:
        period += 1
    return due


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """When the training loop stops to act (in global steps, and seconds for checkpoints)."""

    max_steps: int = resolved(
        Option("max-steps", type=integer, check=STEPS,
               help=f"total training steps (resumes count); default {DEFAULT_MAX_STEPS} "
                    "unless --epochs"),
        Option("epochs", type=number, check=POSITIVE,
               help="train this many passes over the training data instead of --max-steps "
                    "(resolved to steps once the data's size is known: ceil(epochs x "
                    "examples / --batch-size))"))
    eval_every_steps: float = resolved(
        Option("eval-every-steps", type=integer, check=POSITIVE,
               help=f"default {DEFAULT_EVAL_EVERY_STEPS}, or one epoch with --epochs"),
        Option("eval-every-epochs", type=number, check=POSITIVE,
               help="evaluate every this many epochs instead of --eval-every-steps"))
    eval_steps: int | None = flag("eval-steps", type=integer, check=POSITIVE,
                                  help="batches per evaluation; default: the whole eval set")
    log_every_steps: int = flag("log-every-steps", 100, integer, check=POSITIVE,
                                help="steps per progress line (and per tf.function call)")
    checkpoint_every_steps: float = flag("checkpoint-every-steps", type=integer, check=POSITIVE,
                                       help="default: --eval-every-steps; a checkpoint is also "
                                            "written at the end")
    checkpoint_every_secs: float = flag("checkpoint-every-secs", 600.0, number, check=POSITIVE,
                                        help="also checkpoint when this much time passed since "
                                             "the last one")
    keep_checkpoints: int = flag("keep-checkpoints", 5, integer, check=POSITIVE)
    restart_from_scratch: bool = flag(
        "restart-from-scratch", False, switch=True,
        help="start from step 0 even though --job-dir holds checkpoints that none restores, "
             "or of another run (other model, input, training data or classes: moved to "
             "checkpoints/replaced-TIME/); without it both are errors")
    loss_upper_bound: float = flag("loss-upper-bound", type=number, check=POSITIVE,
                                   help="stop as diverged when a training interval's mean loss "
                                        "exceeds this (a non-finite loss always stops the run)")

    # --epochs and --eval-every-epochs as given (once resolved, eval_every_epochs is also 1
    # when --epochs alone sets evaluation); the steps above are resolved from them (and the
    # training data's size) by `in_steps`, before anything reads them. Periods resolved from
    # epochs stay fractional (31.25 steps): each ends on the step that completes it.
    epochs: float | None = None
    eval_every_epochs: float | None = None
    steps_per_epoch: float | None = None  # known once resolved against the data

    def in_steps(self, train_examples: int | None, batch_size: int,
                 origin: str = "--train-files") -> LoopConfig:
        """The schedule with its epochs as steps of `batch_size` examples (identical on every
        worker: the same data gives the same size). `steps_per_epoch` is set whenever the size
        is known, for the progress line."""
        if train_examples is None:
            if self.epochs is not None or self.eval_every_epochs is not None:
                flag = "--epochs" if self.epochs is not None else "--eval-every-epochs"
                raise TrainerError(f"{flag} needs the size of the training data, which {origin} "
                                   "does not tell; give --max-steps and --eval-every-steps")
            return self
        per_epoch = train_examples / batch_size
        changes = {"steps_per_epoch": per_epoch}
        if self.epochs is not None:
            steps = max(1, _whole_steps(self.epochs * per_epoch))
            if steps > MAX_STEPS:
                raise TrainerError(f"--epochs {self.epochs:g} of {train_examples:,} examples is "
                                   f"{steps:,} steps of {batch_size}; at most 2^53 = "
                                   f"{MAX_STEPS:,} are taken")
            changes["max_steps"] = steps
        if self.eval_every_epochs is not None or self.eval_every_steps is None:
            epochs = self.eval_every_epochs or 1.0
            every = epochs * per_epoch
            changes.update(eval_every_epochs=epochs, eval_every_steps=every)
            if self.checkpoint_every_steps is None:
                changes["checkpoint_every_steps"] = every
        return dataclasses.replace(self, **changes)

    def next_boundary(self, step: int) -> int:
        """The first step after `step` at which something is due (a log line at the least)."""
        return min(_next(step, self.log_every_steps), _next(step, self.eval_every_steps),
                   _next(step, self.checkpoint_every_steps), self.max_steps)

    def evaluates_at(self, step: int) -> bool:
        """Whether an evaluation period ends at `step` (the final step evaluates anyway)."""
        return _next(step - 1, self.eval_every_steps) == step

    def checkpoints_at(self, step: int) -> bool:
        """Whether a checkpoint period ends at `step`."""
        return _next(step - 1, self.checkpoint_every_steps) == step

    def epochs_note(self) -> str:
        """The step budget in epochs of the data, as the log says it: 1 epoch, 0.5 epochs."""
        epochs = f"{self.max_steps / self.steps_per_epoch:.3g}"
        return f"{epochs} epoch" if epochs == "1" else f"{epochs} epochs"

    def evaluation_note(self) -> str:
        """When the run evaluates, as its log announces it: never an interval it cannot reach."""
        if _next(0, self.eval_every_steps) >= self.max_steps:
            return "evaluating at the end"
        if self.eval_every_epochs is None:
            return f"evaluating every {self.eval_every_steps:,} steps"
        if self.eval_every_epochs == 1:
            return "evaluating at the end of every epoch"
        return f"evaluating every {self.eval_every_epochs:g} epochs"


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """This task's role in the job and the distribution strategy it runs."""

    strategy: StrategySpec = resolved(
        Option("distribution-strategy", "auto", choices=STRATEGIES,
               help="auto: parameter_server when the cluster has ps tasks, "
                    "multi_worker_mirrored for chief + workers, tpu with --tpu, mirrored on "
                    "several local GPUs, else default"),
        Option("collective-implementation", "auto", choices=COLLECTIVES,
               help="all-reduce of multi_worker_mirrored (nccl needs GPUs)"),
        Option("tpu", help="TPU name or address for the tpu strategy ('local' on a TPU VM); "
                           "default: $TPU_NAME"))
    role: Cluster  # from TF_CONFIG / CLUSTER_SPEC
    evaluator_timeout_secs: float = flag("evaluator-timeout-secs", 3600.0, number,
                                         check=POSITIVE,
                                         help="an evaluator task gives up when no new "
                                              "checkpoint comes for this long")


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Where the run writes, and what it reports to hyperparameter tuning."""

    job_dir: str = resolved(Option("job-dir", help="root of checkpoints/, logs/, results/ and "
                                                   "export/ (per trial when tuning); default: "
                                                   f"./{DEFAULT_JOB_DIR}/MODEL-HASH, one per "
                                                   "model, input and training data"))
    checkpoint_dir: str
    tensorboard_dir: str
    export_dir: str
    results_dir: str  # per-class tables, confusion matrices, curves (trainer.results)
    export_timestamped: bool  # under the job dir; AIP_MODEL_DIR receives the model itself
    job_dir_given: bool  # False: ./trainer-output/<model>-<hash>, one per distinct run
    origins: tuple[tuple[str, str], ...]  # (directory, the flag or variable it came from)
    hypertune_metric: str = flag("hypertune-metric", "accuracy", choices=tuple(sorted(METRICS)),
                                 help="eval metric reported to hyperparameter tuning after every "
                                      "evaluation")
    export_best_only: bool = flag("export-best-only", False, switch=True,
                                  help="export after each evaluation that improves "
                                       "--hypertune-metric instead of once at the end")

    @property
    def metric_higher_is_better(self) -> bool:
        return METRICS[self.hypertune_metric]


SECTIONS = {"data": DataConfig, "model": ModelConfig, "recipe": RecipeConfig,
            "loop": LoopConfig, "cluster": ClusterConfig, "outputs": OutputConfig}


@dataclass(frozen=True)
class Config:
    """Everything one run needs, by section; built once by `config_from_flags`."""

    data: DataConfig
    model: ModelConfig
    recipe: RecipeConfig
    loop: LoopConfig
    cluster: ClusterConfig
    outputs: OutputConfig


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="vertex-trainer train", allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train and evaluate an image classifier on TFRecords, image manifests or "
                    "image folders, report metrics for hyperparameter tuning and export a "
                    "SavedModel. With no data flags (and no Vertex managed dataset) it trains "
                    "on the MNIST sample bundled in the package.",
        epilog="Every flag also accepts its underscore spelling (--learning_rate). Vertex's "
               "AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR override the "
               "locations under --job-dir; TF_CONFIG/CLUSTER_SPEC give the cluster role.")
    for title, section in SECTIONS.items():
        add_section(p, title, section)
    return p


def config_from_flags(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """Parses and validates flags and environment; raises TrainerError with a one-line message."""
    args = build_parser().parse_args(argv)
    for section in SECTIONS.values():
        for _, option in options_of(section):
            problem = option.problem(getattr(args, option.dest))
            if problem:
                raise TrainerError(problem)
    role = resolve_cluster(environ)
    spec = MODELS[args.model]
    if args.augment_min_area is not None and not args.augment:
        raise TrainerError("--augment-min-area needs --augment (it sets the smallest random "
                           "crop)")
    data = given(DataConfig, args, image_shape=(args.image_height, args.image_width,
                                                args.image_channels),
                 augment_min_area=_or(args.augment_min_area, AUGMENT_MIN_AREA),
                 files=resolve_data_files(
                     {"--train-files": args.train_files, "--eval-files": args.eval_files,
                      "--test-files": args.test_files}, environ,
                     bundled_sample=args.bundled_sample, sample_train=SAMPLE_TRAIN_FILES,
                     sample_eval=SAMPLE_EVAL_FILES))
    model = given(ModelConfig, args, optimizer=args.optimizer or spec.optimizer,
                  learning_rate=_or(args.learning_rate, spec.learning_rate),
                  dropout=_or(args.dropout, spec.dropout),
                  eval_batch_size=args.eval_batch_size or args.batch_size)
    loop = _loop(args)
    recipe = _recipe(args, spec, data, model, loop)
    cluster = given(ClusterConfig, args, role=role, strategy=resolve_strategy(
        args.distribution_strategy, args.collective_implementation, role,
        args.tpu or environ.get("TPU_NAME") or None))
    strategy = cluster.strategy
    if data.skip_corrupt_images and strategy.coordinated:
        raise TrainerError(f"--skip-corrupt-images is not available with {strategy.name}: its "
                           "input pipelines run on remote workers, where skips cannot be counted")
    if data.cache and strategy.coordinated:
        raise TrainerError(f"--cache is not available with {strategy.name}: its input "
                           "pipelines run on remote workers, whose memory and disks this task "
                           "cannot size")
    if recipe.freeze_backbone_steps and strategy.coordinated:
        raise TrainerError(f"--freeze-backbone-steps is not available with {strategy.name}; "
                           "use a synchronous strategy")
    run_name = None if args.job_dir else run_record.run_name(
        model.name, data.image_shape, data.files, data.num_classes, data.label_map)
    outputs = given(OutputConfig, args, **resolve_output_dirs(args.job_dir, role.trial, environ,
                                                               run_name))
    return Config(data, model, recipe, loop, cluster, outputs)


def with_data_size(config: Config, train_examples: int | None) -> Config:
    """The config with --epochs and --eval-every-epochs resolved to steps for training data of
    this many examples (every worker resolves the same data alike, so they agree on steps)."""
    loop = config.loop.in_steps(train_examples, config.model.batch_size,
                                config.data.files.origin("--train-files"))
    _check_phases(config.recipe, loop)
    return dataclasses.replace(config, loop=loop)


def _loop(args) -> LoopConfig:
    """The loop flags: steps as given, or left for `with_data_size` to resolve from epochs."""
    for steps, epochs in (("max_steps", "epochs"), ("eval_every_steps", "eval_every_epochs")):
        if getattr(args, steps) is not None and getattr(args, epochs) is not None:
            raise TrainerError(f"--{steps.replace('_', '-')} and --{epochs.replace('_', '-')} "
                               "both set the same thing; give one of them")
    max_steps = args.max_steps or (None if args.epochs else DEFAULT_MAX_STEPS)
    eval_every = args.eval_every_steps or (
        None if args.epochs or args.eval_every_epochs else DEFAULT_EVAL_EVERY_STEPS)
    return given(LoopConfig, args, max_steps=max_steps, eval_every_steps=eval_every,
                 epochs=args.epochs, eval_every_epochs=args.eval_every_epochs,
                 checkpoint_every_steps=args.checkpoint_every_steps or eval_every,
                 loss_upper_bound=_or(args.loss_upper_bound, math.inf))


def _or(value, default):
    """A flag's value, or its default when not given (0 and 0.0 are given values)."""
    return default if value is None else value


def _recipe(args, spec: ModelSpec, data: DataConfig, model: ModelConfig,
            loop: LoopConfig) -> RecipeConfig:
    """The recipe flags, checked against the model and --max-steps."""
    named = f"--model {model.name}"
    if spec.backbone:
        height, width, channels = data.image_shape
        if min(height, width) < spec.min_size:
            raise TrainerError(f"{named} needs images of at least {spec.min_size}x"
                               f"{spec.min_size} (--image-height, --image-width), got "
                               f"{height}x{width}")
        if channels not in spec.channels:
            raise TrainerError(f"{named} takes images of 1 or 3 channels (--image-channels), "
                               f"got {channels}")
    else:
        for name in ("pretrained_weights", "freeze_backbone_steps", "fine_tune_learning_rate"):
            if getattr(args, name):
                raise TrainerError(f"--{name.replace('_', '-')} needs a model with a backbone "
                                   f"({', '.join(n for n, s in MODELS.items() if s.backbone)}); "
                                   f"{named} has none")
    fine_tune = args.fine_tune_learning_rate
    if fine_tune is None and args.freeze_backbone_steps:
        fine_tune = model.learning_rate / 10
    recipe = given(RecipeConfig, args, weight_decay=_or(args.weight_decay, spec.weight_decay),
                   fine_tune_learning_rate=fine_tune)
    if loop.max_steps is not None:  # else once --epochs is resolved (with_data_size)
        _check_phases(recipe, loop)
    return recipe


def _check_phases(recipe: RecipeConfig, loop: LoopConfig) -> None:
    for name in ("warmup_steps", "freeze_backbone_steps"):
        if not 0 <= getattr(recipe, name) < loop.max_steps:
            budget = (f"--max-steps {loop.max_steps}" if loop.epochs is None else
                      f"the {loop.max_steps} steps of --epochs {loop.epochs:g}")
            raise TrainerError(f"--{name.replace('_', '-')} must be in [0, {budget}), got "
                               f"{getattr(recipe, name)}")


def resolve_output_dirs(job_dir: str | None, trial: str | None,
                        environ: Mapping[str, str], run_name: str | None = None) -> dict:
    """Where checkpoints, TensorBoard logs and the export go (OutputConfig's fields).

    Each of Vertex's AIP_* directories wins for its kind. Everything else lives under the job
    dir, inside a per-trial subdirectory when this is a tuning trial, so trials never overwrite
    each other. Without --job-dir that is ./trainer-output/`run_name` (run_record.run_name: the
    model and a hash of the data and input), so different runs never share checkpoints and the
    same command resumes. AIP_MODEL_DIR receives the SavedModel itself (Vertex uploads that
    directory); under the job dir each export gets a timestamped directory, as tf.estimator's
    exporters did.
    """
    root = job_dir or join(DEFAULT_JOB_DIR, run_name or "")
    if not is_url(root):
        root = os.path.abspath(root)
    if trial:
        root = join(root, trial)
    dirs, origins = {"job_dir": root}, []
    for key, variable, subdir in (("checkpoint_dir", "AIP_CHECKPOINT_DIR", "checkpoints"),
                                  ("tensorboard_dir", "AIP_TENSORBOARD_LOG_DIR", "logs"),
                                  ("export_dir", "AIP_MODEL_DIR", "export")):
        dirs[key] = environ.get(variable) or join(root, subdir)
        origins.append((dirs[key], variable if environ.get(variable) else "--job-dir"))
    # Vertex has no variable for them: beside the checkpoints, in the job's output directory.
    dirs["results_dir"] = join(dirname(dirs["checkpoint_dir"]), "results")
    origins.append((dirs["results_dir"], origins[0][1]))
    dirs["export_timestamped"] = not environ.get("AIP_MODEL_DIR")
    dirs["origins"] = tuple(origins)
    dirs["job_dir_given"] = job_dir is not None
    return dirs

