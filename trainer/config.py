"""Flags + Vertex environment -> one validated `Config` (pure Python: no TensorFlow import).

Hyperparameter-tuning services append `--<parameterId>=<value>`, so every flag also accepts its
underscore spelling (`--learning_rate`). Unknown or abbreviated flags are errors: a mistyped
hyperparameter must never be silently ignored.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from trainer.cli import OneLineParser
from trainer.cluster import Cluster, resolve_cluster
from trainer.data.vertex_env import DataFiles, resolve_data_files
from trainer.errors import TrainerError
from trainer.models import MODELS, OPTIMIZERS
from trainer.precision import CHOICES as MIXED_PRECISION
from trainer.storage import is_url, join
from trainer.strategies import COLLECTIVES, STRATEGIES, StrategySpec, resolve as resolve_strategy

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_TRAIN_FILES = str(SAMPLE_DIR / "train-*.tfrecord.gz")
SAMPLE_EVAL_FILES = str(SAMPLE_DIR / "eval-*.tfrecord.gz")
DEFAULT_JOB_DIR = "trainer-output"
# metric name -> whether larger is better
METRICS = {"accuracy": True, "loss": False}
LR_SCHEDULES = ("constant", "cosine", "step", "linear")


@dataclass(frozen=True)
class Schedule:
    """When the training loop stops to act, in global steps (and seconds for checkpoints)."""

    max_steps: int
    log_every_steps: int
    eval_every_steps: int
    checkpoint_every_steps: int
    checkpoint_every_secs: float

    def next_boundary(self, step: int) -> int:
        """The first step after `step` at which something is due (a log line at the least)."""
        return min(_next(step, self.log_every_steps), _next(step, self.eval_every_steps),
                   _next(step, self.checkpoint_every_steps), self.max_steps)


def _next(step: int, every: int) -> int:
    return (step // every + 1) * every


@dataclass(frozen=True)
class Recipe:
    """How the weights are initialized and optimized beyond the optimizer and learning rate.

    The learning rate follows `lr_schedule` after `warmup_steps` of linear warm-up. With
    `freeze_backbone_steps`, only the head trains for that many steps at the learning rate, then
    the whole net at `fine_tune_learning_rate`, the schedule starting over for that phase.
    """

    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    clip_norm: float | None = None
    ema_decay: float | None = None
    pretrained_weights: str | None = None  # "imagenet" or a .weights.h5 file of the backbone
    init_checkpoint: str | None = None
    freeze_backbone_steps: int = 0
    fine_tune_learning_rate: float | None = None


@dataclass(frozen=True)
class Config:
    """Everything one training run needs; built once by `config_from_flags`."""

    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_classes: int | None  # None: inferred from the data's label map
    shuffle_buffer: int
    model: str
    optimizer: str
    learning_rate: float
    dropout: float
    batch_size: int
    eval_batch_size: int
    schedule: Schedule
    eval_steps: int | None
    keep_checkpoints: int
    restart_from_scratch: bool
    loss_upper_bound: float
    seed: int | None
    hypertune_metric: str
    export_best_only: bool
    strategy: StrategySpec
    evaluator_timeout_secs: float
    checkpoint_dir: str
    tensorboard_dir: str
    export_dir: str
    export_timestamped: bool
    output_origins: tuple[tuple[str, str], ...]  # (directory, the flag or variable it came from)
    label_map: str | None
    cluster: Cluster
    mixed_precision: str = "auto"  # as asked; trainer.precision.choose resolves auto
    jit_compile: bool = False
    data_files: DataFiles | None = None  # with what gave each pattern; None: the two fields above
    augment: bool = False
    skip_corrupt_images: bool = False
    recipe: Recipe = field(default_factory=Recipe)

    @property
    def metric_higher_is_better(self) -> bool:
        return METRICS[self.hypertune_metric]


def _flag(group, name: str, **kwargs):
    dest = name.replace("-", "_")
    spellings = [f"--{name}"] + ([f"--{dest}"] if dest != name else [])
    group.add_argument(*spellings, dest=dest, **kwargs)


def integer(text: str) -> int:
    """The type of integer flags: also takes '64.0', as tuning services may send a discrete
    value (a double in their API) that way."""
    try:
        return int(text)
    except ValueError:
        value = float(text)  # a ValueError here becomes argparse's "invalid int value"
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        return int(value)


integer.__name__ = "int"  # argparse names the type in its messages


def number(text: str) -> float:
    """The type of float flags: finite only (`inf` or `nan` would train a model of NaNs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
    g = p.add_argument_group("data")
    _flag(g, "train-files", metavar="PATTERNS",
          help="comma-separated globs (local, /gcs/..., gs://...) of TFRecords (raw pixels or "
               "image/encoded), JSONL/CSV image manifests, or one folder ROOT/CLASS/image; "
               "default: $AIP_TRAINING_DATA_URI with $AIP_DATA_FORMAT, else the bundled MNIST "
               "sample")
    _flag(g, "eval-files", metavar="PATTERNS",
          help="as --train-files; default: $AIP_VALIDATION_DATA_URI with $AIP_DATA_FORMAT")
    _flag(g, "test-files", metavar="PATTERNS",
          help="as --train-files, evaluated once at the end; default: $AIP_TEST_DATA_URI with "
               "$AIP_DATA_FORMAT")
    _flag(g, "bundled-sample", type=_bool, nargs="?", const=True, default=False,
          metavar="BOOL", help="train the bundled MNIST sample when no data is given, also "
                               "inside a Vertex job (where no data is otherwise an error)")
    _flag(g, "image-height", type=integer, default=28,
          help="encoded images are resized (and centre-cropped) to this")
    _flag(g, "image-width", type=integer, default=28)
    _flag(g, "image-channels", type=integer, default=1,
          help="the records' `depth`; encoded images convert (grey <-> RGB)")
    _flag(g, "num-classes", type=integer,
          help="labels must lie in [0, N); default: the label map's size (class names in the "
               "training data, --label-map, or labels.txt beside the records), else 10")
    _flag(g, "shuffle-buffer", type=integer, default=10_000, help="records (training only)")
    _flag(g, "augment", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
          help="training images (encoded sources): random resized crop and horizontal flip")
    _flag(g, "skip-corrupt-images", type=_bool, nargs="?", const=True, default=False,
          metavar="BOOL", help="drop images that cannot be read or decoded, counting them "
                               "(log and TensorBoard), instead of stopping with an error")

    g = p.add_argument_group("model and hyperparameters")
    _flag(g, "model", default="cnn", choices=sorted(MODELS),
          help="; ".join(f"{n}: {s.description}" for n, s in MODELS.items()))
    _flag(g, "optimizer", choices=OPTIMIZERS, help="default: the model's tutorial optimizer")
    _flag(g, "learning-rate", type=number, help="default: the model's tutorial value")
    _flag(g, "dropout", type=number, help="rate of the dropout before the output layer; "
                                            "default: the model's tutorial value")
    _flag(g, "batch-size", type=integer, default=100,
          help="global batch size, split across all replicas")
    _flag(g, "eval-batch-size", type=integer, help="global; default: --batch-size")
    _flag(g, "seed", type=integer, help="seed for weights, dropout and shuffling (training records still "
               "arrive in the order parallel reads finish, so runs differ slightly)")
    _flag(g, "mixed-precision", default="auto", choices=MIXED_PRECISION,
          help="compute precision (weights, checkpoints and the export stay float32). auto: "
               "bf16 on TPUs, GPUs of compute capability >= 8.0 and CPUs with AMX-BF16; fp16 "
               "with dynamic loss scaling on 7.x GPUs (T4, V100); else none. "
               "bf16/fp16 where the device lacks them train (slowly) with a warning")
    _flag(g, "lr-schedule", default="constant", choices=LR_SCHEDULES,
          help="learning-rate decay over the run (after --warmup-steps): cosine to 0, step "
               "(x0.1 at 50%% and 75%% of the steps), linear to 0")
    _flag(g, "warmup-steps", type=integer, default=0,
          help="steps of linear warm-up from 0 to --learning-rate")
    _flag(g, "weight-decay", type=number,
          help="decoupled weight decay (adam becomes AdamW), not applied to biases and "
               "normalization parameters; default: the model's (1e-4 for the ResNets, else 0)")
    _flag(g, "label-smoothing", type=number, default=0.0,
          help="training loss against labels smoothed by this much (0: none)")
    _flag(g, "clip-norm", type=number, help="clip gradients to this global norm")
    _flag(g, "ema-decay", type=number,
          help="keep an exponential moving average of the weights with this decay (e.g. "
               "0.999); evaluations and the export use the averaged weights")
    _flag(g, "pretrained-weights", metavar="imagenet|PATH",
          help="backbone models: 'imagenet' (downloaded by Keras at run time) or a "
               ".weights.h5 file written by the backbone's save_weights")
    _flag(g, "init-checkpoint", metavar="PATH",
          help="warm start from another run's checkpoint (a checkpoint prefix or a directory "
               "holding checkpoints): the variables whose name and shape match are loaded, "
               "and listed in the log; ignored when --job-dir holds checkpoints to resume")
    _flag(g, "freeze-backbone-steps", type=integer, default=0,
          help="backbone models: train only the head for this many steps, then the whole net "
               "at --fine-tune-learning-rate")
    _flag(g, "fine-tune-learning-rate", type=number,
          help="learning rate once the backbone is unfrozen; default: --learning-rate / 10")
    _flag(g, "jit-compile", type=_bool, nargs="?", const=True, default=False, metavar="BOOL",
          help="compile each training step with XLA")

    g = p.add_argument_group("training loop")
    _flag(g, "max-steps", type=integer, default=1000, help="total training steps (resumes count)")
    _flag(g, "eval-every-steps", type=integer, default=500)
    _flag(g, "eval-steps", type=integer,
          help="batches per evaluation; default: the whole eval set")
    _flag(g, "log-every-steps", type=integer, default=100,
          help="steps per progress line (and per tf.function call)")
    _flag(g, "checkpoint-every-steps", type=integer,
          help="default: --eval-every-steps; a checkpoint is also written at the end")
    _flag(g, "checkpoint-every-secs", type=number, default=600.0,
          help="also checkpoint when this much time passed since the last one")
    _flag(g, "keep-checkpoints", type=integer, default=5)
    _flag(g, "restart-from-scratch", type=_bool, nargs="?", const=True, default=False,
          metavar="BOOL", help="start from step 0 even though --job-dir holds checkpoints, none "
                               "of which restores (without it that is an error)")
    _flag(g, "loss-upper-bound", type=number,
          help="stop as diverged when a training interval's mean loss exceeds this (a "
               "non-finite loss always stops the run)")
    _flag(g, "distribution-strategy", default="auto", choices=STRATEGIES,
          help="auto: parameter_server when the cluster has ps tasks, multi_worker_mirrored for "
               "chief + workers, tpu with --tpu, mirrored on several local GPUs, else default")
    _flag(g, "collective-implementation", default="auto", choices=COLLECTIVES,
          help="all-reduce of multi_worker_mirrored (nccl needs GPUs)")
    _flag(g, "evaluator-timeout-secs", type=number, default=3600.0,
          help="an evaluator task gives up when no new checkpoint comes for this long")
    _flag(g, "tpu", help="TPU name or address for the tpu strategy ('local' on a TPU VM); "
                         "default: $TPU_NAME")

    g = p.add_argument_group("reporting and outputs")
    _flag(g, "hypertune-metric", default="accuracy", choices=sorted(METRICS),
          help="eval metric reported to hyperparameter tuning after every evaluation")
    _flag(g, "export-best-only", type=_bool, nargs="?", const=True, default=False,
          metavar="BOOL", help="export after each evaluation that improves --hypertune-metric "
                               "instead of once at the end")
    _flag(g, "label-map", metavar="PATH",
          help="one class name per line (line i names class i); adds a `labels` output to the "
               "export and writes labels.txt beside it")
    _flag(g, "job-dir", help="root of checkpoints/, logs/ and export/ (per trial when tuning); "
                                f"default: ./{DEFAULT_JOB_DIR}")
    return p


def config_from_flags(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """Parses and validates flags and environment; raises TrainerError with a one-line message."""
    args = build_parser().parse_args(argv)
    cluster = resolve_cluster(environ)
    spec = MODELS[args.model]

    _positive(args, "image_height", "image_width", "image_channels", "batch_size", "max_steps",
              "eval_every_steps", "log_every_steps", "keep_checkpoints")
    _positive(args, "eval_batch_size", "eval_steps", "checkpoint_every_steps",
              "checkpoint_every_secs", "learning_rate", "loss_upper_bound", optional=True)
    _positive(args, "evaluator_timeout_secs")
    if args.num_classes is not None and args.num_classes < 2:
        raise TrainerError(f"--num-classes must be at least 2, got {args.num_classes}")
    if args.shuffle_buffer < 1:
        raise TrainerError(f"--shuffle-buffer must be positive, got {args.shuffle_buffer}")
    dropout = spec.dropout if args.dropout is None else args.dropout
    if not 0.0 <= dropout < 1.0:
        raise TrainerError(f"--dropout must be in [0, 1), got {dropout}")

    recipe = _recipe(args, spec)
    data_files = resolve_data_files(
        {"--train-files": args.train_files, "--eval-files": args.eval_files,
         "--test-files": args.test_files}, environ, bundled_sample=args.bundled_sample,
        sample_train=SAMPLE_TRAIN_FILES, sample_eval=SAMPLE_EVAL_FILES)

    strategy = resolve_strategy(args.distribution_strategy, args.collective_implementation,
                                cluster, args.tpu or environ.get("TPU_NAME") or None)
    if args.skip_corrupt_images and strategy.coordinated:
        raise TrainerError(f"--skip-corrupt-images is not available with {strategy.name}: its "
                           "input pipelines run on remote workers, where skips cannot be counted")
    if recipe.freeze_backbone_steps and strategy.coordinated:
        raise TrainerError(f"--freeze-backbone-steps is not available with {strategy.name}; "
                           "use a synchronous strategy")
    dirs = resolve_output_dirs(args.job_dir, cluster.trial, environ)
    return Config(
        train_files=data_files.train, eval_files=data_files.eval,
        image_shape=(args.image_height, args.image_width, args.image_channels),
        num_classes=args.num_classes, shuffle_buffer=args.shuffle_buffer,
        model=args.model, optimizer=args.optimizer or spec.optimizer,
        learning_rate=spec.learning_rate if args.learning_rate is None else args.learning_rate,
        dropout=dropout, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size or args.batch_size,
        schedule=Schedule(
            max_steps=args.max_steps, log_every_steps=args.log_every_steps,
            eval_every_steps=args.eval_every_steps,
            checkpoint_every_steps=args.checkpoint_every_steps or args.eval_every_steps,
            checkpoint_every_secs=args.checkpoint_every_secs),
        eval_steps=args.eval_steps, keep_checkpoints=args.keep_checkpoints,
        restart_from_scratch=args.restart_from_scratch,
        loss_upper_bound=math.inf if args.loss_upper_bound is None else args.loss_upper_bound,
        seed=args.seed, hypertune_metric=args.hypertune_metric,
        export_best_only=args.export_best_only,
        strategy=strategy, evaluator_timeout_secs=args.evaluator_timeout_secs,
        label_map=args.label_map,
        cluster=cluster, mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
        data_files=data_files, augment=args.augment,
        skip_corrupt_images=args.skip_corrupt_images, recipe=recipe, **dirs)


def _recipe(args, spec) -> Recipe:
    """The recipe flags, checked against the model and --max-steps."""
    model = f"--model {args.model}"
    if spec.backbone:
        height, width, channels = args.image_height, args.image_width, args.image_channels
        if min(height, width) < spec.min_size:
            raise TrainerError(f"{model} needs images of at least {spec.min_size}x"
                               f"{spec.min_size} (--image-height, --image-width), got "
                               f"{height}x{width}")
        if channels not in spec.channels:
            raise TrainerError(f"{model} takes images of 1 or 3 channels (--image-channels), "
                               f"got {channels}")
    else:
        for flag in ("pretrained_weights", "freeze_backbone_steps", "fine_tune_learning_rate"):
            if getattr(args, flag):
                raise TrainerError(f"--{flag.replace('_', '-')} needs a model with a backbone "
                                   f"({', '.join(n for n, s in MODELS.items() if s.backbone)}); "
                                   f"{model} has none")
    if not 0 <= args.warmup_steps < args.max_steps:
        raise TrainerError(f"--warmup-steps must be in [0, --max-steps {args.max_steps}), got "
                           f"{args.warmup_steps}")
    if not 0 <= args.freeze_backbone_steps < args.max_steps:
        raise TrainerError(f"--freeze-backbone-steps must be in [0, --max-steps "
                           f"{args.max_steps}), got {args.freeze_backbone_steps}")
    weight_decay = spec.weight_decay if args.weight_decay is None else args.weight_decay
    if weight_decay < 0:
        raise TrainerError(f"--weight-decay must not be negative, got {weight_decay}")
    if args.ema_decay is not None and not 0 <= args.ema_decay < 1:
        raise TrainerError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if not 0 <= args.label_smoothing < 1:
        raise TrainerError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    _positive(args, "clip_norm", "fine_tune_learning_rate", optional=True)
    learning_rate = spec.learning_rate if args.learning_rate is None else args.learning_rate
    fine_tune = args.fine_tune_learning_rate
    return Recipe(
        lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps, weight_decay=weight_decay,
        label_smoothing=args.label_smoothing, clip_norm=args.clip_norm,
        ema_decay=args.ema_decay, pretrained_weights=args.pretrained_weights,
        init_checkpoint=args.init_checkpoint, freeze_backbone_steps=args.freeze_backbone_steps,
        fine_tune_learning_rate=(fine_tune if fine_tune is not None or
                                 not args.freeze_backbone_steps else learning_rate / 10))


def _positive(args, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(args, name)
        if optional and value is None:
            continue
        if not value > 0:  # also rejects NaN
            flag = "--" + name.replace("_", "-")
            raise TrainerError(f"{flag} must be positive, got {value}")




def resolve_output_dirs(job_dir: str | None, trial: str | None,
                        environ: Mapping[str, str]) -> dict:
    """Where checkpoints, TensorBoard logs and the export go.

    Each of Vertex's AIP_* directories wins for its kind. Everything else lives under the job
    dir, inside a per-trial subdirectory when this is a tuning trial, so trials never overwrite
    each other. AIP_MODEL_DIR receives the SavedModel itself (Vertex uploads that directory);
    under the job dir each export gets a timestamped directory, as tf.estimator's exporters did.
    """
    root = job_dir or DEFAULT_JOB_DIR
    if not is_url(root):
        root = os.path.abspath(root)
    if trial:
        root = join(root, trial)
    dirs, origins = {}, []
    for key, variable, subdir in (("checkpoint_dir", "AIP_CHECKPOINT_DIR", "checkpoints"),
                                  ("tensorboard_dir", "AIP_TENSORBOARD_LOG_DIR", "logs"),
                                  ("export_dir", "AIP_MODEL_DIR", "export")):
        dirs[key] = environ.get(variable) or join(root, subdir)
        origins.append((dirs[key], variable if environ.get(variable) else "--job-dir"))
    dirs["export_timestamped"] = not environ.get("AIP_MODEL_DIR")
    dirs["output_origins"] = tuple(origins)
    return dirs
