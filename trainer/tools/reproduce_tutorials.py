"""Train each model on full MNIST and compare with what its tutorial or paper published.

    python scripts/prepare_mnist.py --idx-dir ../shared/data/mnist --output-dir data/mnist
    python scripts/reproduce_tutorials.py --train-files 'data/mnist/train-*' \
        --eval-files 'data/mnist/eval-*' --output REPRODUCTION.md

Every row is one `trainer.task` run with the flags in its command column (plus the data flags,
`--seed` and `--mixed-precision none`, so rows compare across machines), evaluated on the whole
eval set (MNIST's 10,000 test images). The tutorial rows use each tutorial's optimizer and
learning rate (the trainer's defaults) at one common budget, 2,000 steps of batch 100; a row
below its published figure is followed by the run that meets it: the tutorial's own budget, or
the recipe flags.

The fine-tuning rows need pretrained weights, and nothing here downloads ImageNet's: a
`mobilenet_v3_small` is pretrained on the digits 0-4 (PNG class folders written from the
records), its backbone saved with `save_weights`, and that file fine-tunes a new head and then
the whole net on 1,000 images of the digits 5-9 (`--pretrained-weights`,
`--freeze-backbone-steps`), next to the same model trained from scratch on the same images.
Writes a markdown table: row, command flags, steps, test accuracy, examples/s, wall, published.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass


from trainer.cli import OneLineParser, run_cli
from trainer.config import config_from_flags

TUTORIAL_BUDGET = ("--max-steps", "2000", "--batch-size", "100")


@dataclass(frozen=True)
class Row:
    key: str  # its --rows name
    name: str
    model: str
    flags: tuple[str, ...]  # beyond the data, model, seed, precision and job-dir flags
    published: str = ""


ROWS = (
    Row("dnn", "dnn", "dnn", TUTORIAL_BUDGET, "97.27% after 2,000 steps (DNNClassifier tutorial)"),
    Row("cnn_small", "cnn_small", "cnn_small", TUTORIAL_BUDGET,
        "97.61% after 2,000 steps (Estimator API tutorial)"),
    # The tutorial's numpy_input_fn has batch_size=128 by default, which it does not change.
    Row("cnn_small@128", "cnn_small, the tutorial's budget", "cnn_small",
        ("--max-steps", "2000", "--batch-size", "128"),
        "97.61% after 2,000 steps of batch 128"),
    Row("cnn_small+recipe", "cnn_small, recipe", "cnn_small", TUTORIAL_BUDGET + (
        "--learning-rate", "1e-3", "--lr-schedule", "cosine", "--warmup-steps", "100"),
        "97.61% after 2,000 steps"),
    Row("cnn", "cnn", "cnn", TUTORIAL_BUDGET,
        ">= 99.0% within 2,000 steps (tf.estimator run here: 98.98% @1k, 99.08% @2k)"),
    Row("cnn_bn", "cnn_bn", "cnn_bn", TUTORIAL_BUDGET,
        "99.53% (Keras-to-Estimator tutorial, trained for epochs with a decaying rate)"),
    # About 10 epochs, the learning rate decaying from 0.01 as the tutorial's does.
    Row("cnn_bn+recipe", "cnn_bn, recipe", "cnn_bn", (
        "--max-steps", "4700", "--batch-size", "128", "--learning-rate", "0.01",
        "--lr-schedule", "cosine", "--warmup-steps", "200"), "99.53%"),
    # He et al.'s CIFAR recipe (SGD + momentum 0.9 from 0.1, weight decay 1e-4: the model's
    # defaults), cosine instead of steps at 32k/48k to fit 2,000 steps.
    Row("resnet20", "resnet20", "resnet20", (
        "--max-steps", "2000", "--batch-size", "128", "--lr-schedule", "cosine",
        "--warmup-steps", "200"), "CIFAR-10: 8.75% error (He et al. 2016); no MNIST figure"),
)
FINE_TUNING = "fine-tuning"  # the --rows name of the mobilenet_v3_small study

FINE_TUNING_SIZE = 32  # mobilenet_v3_small's smallest input
SOURCE_DIGITS, TARGET_DIGITS = range(0, 5), range(5, 10)
TARGET_TRAIN_PER_CLASS = 200
PRETRAIN = ("--max-steps", "1500", "--batch-size", "128", "--lr-schedule", "cosine",
            "--warmup-steps", "100")
FINE_TUNE_STEPS = ("--max-steps", "600", "--batch-size", "64")
FREEZE = ("--freeze-backbone-steps", "200", "--fine-tune-learning-rate", "1e-4")


def write_digit_folders(patterns: str, root: str, digits, per_class: int | None = None) -> int:
    """PNG class folders ROOT/<digit>/<n>.png of the given digits from raw MNIST records (the
    first `per_class` of each, or all); returns how many images it wrote."""
    import numpy as np
    import tensorflow as tf

    from trainer import data

    source = data.inspect_input(tuple(patterns.split(",")), "--train-files", (28, 28, 1), 10)
    counts = dict.fromkeys(digits, 0)
    for images, labels in data.make_dataset(source, batch_size=1000, training=False):
        for image, label in zip(images.numpy(), labels.numpy()):
            label = int(label)
            if label not in counts or (per_class is not None and counts[label] >= per_class):
                continue
            path = os.path.join(root, str(label), f"{counts[label]:05d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
            tf.io.write_file(path, tf.io.encode_png(pixels))
            counts[label] += 1
    return sum(counts.values())


def save_backbone_weights(job_dir: str, path: str, num_classes: int) -> None:
    """The backbone of the mobilenet_v3_small trained in `job_dir`, as a .weights.h5 file."""
    from trainer import models
    from trainer.models import applications
    from trainer.warm_start import warm_start

    shape = (FINE_TUNING_SIZE, FINE_TUNING_SIZE, 1)
    # The trained model's dropout, so that its layers (and the head) sit where the run's did.
    model = models.build_model("mobilenet_v3_small", shape, num_classes,
                               models.MODELS["mobilenet_v3_small"].dropout)
    warm_start(model, os.path.join(job_dir, "checkpoints"))
    applications.backbone_of(model).save_weights(path)


@dataclass(frozen=True)
class Measured:
    name: str
    flags: tuple[str, ...]
    step: int
    accuracy: float
    examples_per_sec: float | None
    seconds: float
    published: str = ""

    def line(self) -> str:
        rate = f"{self.examples_per_sec:,.0f}" if self.examples_per_sec else "n/a"
        return (f"| {self.name} | `{' '.join(self.flags)}` | {self.step:,} | "
                f"{100 * self.accuracy:.2f}% | {rate} | {self.seconds:,.0f} s | "
                f"{self.published} |")


def train(name: str, model: str, flags, data_flags, job_dir: str, seed: int,
          published: str = "") -> Measured:
    from trainer import task

    config = config_from_flags([*data_flags, "--model", model, *flags, "--seed", str(seed),
                                "--mixed-precision", "none", "--job-dir", job_dir], os.environ)
    start = time.perf_counter()
    result = task.run(config)
    return Measured(name, ("--model", model, *flags), result.step,
                    result.metrics["accuracy"], result.examples_per_sec,
                    time.perf_counter() - start, published)


def _budget(flags: tuple[str, ...], steps: int | None) -> tuple[str, ...]:
    """`flags` with --max-steps replaced by `steps` (a smoke run), and evaluating at the end."""
    flags = list(flags)
    if steps is not None:
        flags[flags.index("--max-steps") + 1] = str(steps)
        for flag in ("--warmup-steps", "--freeze-backbone-steps"):
            if flag in flags:
                flags[flags.index(flag) + 1] = str(steps // 2)
    return (*flags, "--eval-every-steps", flags[flags.index("--max-steps") + 1])


def fine_tuning_rows(args) -> list[Measured]:
    data_root = os.path.join(args.job_root, "fine-tuning-data")
    splits = ("pretrain", "pretrain-eval", "train", "eval")
    folders = {split: os.path.join(data_root, split) for split in splits}
    if not os.path.isdir(data_root):
        # Written aside and renamed, so an interrupted run never leaves a partial set to reuse.
        partial = f"{data_root}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_digit_folders(args.train_files, os.path.join(partial, "pretrain"), SOURCE_DIGITS)
        write_digit_folders(args.eval_files, os.path.join(partial, "pretrain-eval"),
                            SOURCE_DIGITS)
        write_digit_folders(args.train_files, os.path.join(partial, "train"), TARGET_DIGITS,
                            TARGET_TRAIN_PER_CLASS)
        write_digit_folders(args.eval_files, os.path.join(partial, "eval"), TARGET_DIGITS)
        os.replace(partial, data_root)
    size = ("--image-height", str(FINE_TUNING_SIZE), "--image-width", str(FINE_TUNING_SIZE),
            "--image-channels", "1")
    pretrain_job = os.path.join(args.job_root, "mobilenet-pretrain")
    rows = [train("mobilenet_v3_small, pretraining on digits 0-4 (all their training images)",
                  "mobilenet_v3_small", size + _budget(PRETRAIN, args.steps),
                  ("--train-files", folders["pretrain"], "--eval-files",
                   folders["pretrain-eval"]), pretrain_job, args.seed,
                  "the weights file for the next row")]
    weights = os.path.join(args.job_root, "mobilenet_v3_small-digits-0-4.weights.h5")
    save_backbone_weights(pretrain_job, weights, len(SOURCE_DIGITS))
    target = ("--train-files", folders["train"], "--eval-files", folders["eval"])
    images = f"{len(TARGET_DIGITS) * TARGET_TRAIN_PER_CLASS:,} images of digits 5-9"
    steps = _budget(FINE_TUNE_STEPS + FREEZE, args.steps)
    rows.append(train(f"mobilenet_v3_small, fine-tuned on {images}", "mobilenet_v3_small",
                      size + ("--pretrained-weights", weights) + steps, target,
                      os.path.join(args.job_root, "mobilenet-fine-tuned"), args.seed,
                      "above the next row (same data, same steps)"))
    rows.append(train(f"mobilenet_v3_small, from scratch on {images}", "mobilenet_v3_small",
                      size + _budget(FINE_TUNE_STEPS, args.steps), target,
                      os.path.join(args.job_root, "mobilenet-scratch"), args.seed))
    return rows


def main(argv=None) -> int:
    return run_cli(lambda: _reproduce(argv))


class _RowRetracing(logging.Filter):
    """Each row builds its own model and step functions in this one process, and TensorFlow
    counts their first traces across rows as retracing: a warning of ~600 characters per row
    about a cost that is the point of a new row."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _reproduce(argv) -> None:
    names = [row.key for row in ROWS] + [FINE_TUNING]
    p = OneLineParser(prog="vertex-trainer reproduce", description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--train-files", required=True)
    p.add_argument("--eval-files", required=True)
    p.add_argument("--rows", default=",".join(names),
                   help=f"comma-separated, of: {', '.join(names)}")
    p.add_argument("--steps", type=int,
                   help="train every row this many steps instead of its budget (a smoke run)")
    p.add_argument("--job-root", default="reproduction-jobs",
                   help="one job dir per row below it (an existing one resumes)")
    p.add_argument("--output", default="REPRODUCTION.md")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    chosen = [name.strip() for name in args.rows.split(",")]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        p.error(f"--rows: unknown row {unknown[0]!r}; expected some of: {', '.join(names)}")
    if args.steps is not None and args.steps < 2:
        p.error(f"--steps must be at least 2, got {args.steps}")
    from trainer.logs import log_to_stdout

    log_to_stdout()
    logging.getLogger("tensorflow").addFilter(_RowRetracing())
    data_flags = ("--train-files", args.train_files, "--eval-files", args.eval_files)
    measured = []
    for row in ROWS:
        if row.key in chosen:
            measured.append(train(row.name, row.model, _budget(row.flags, args.steps),
                                  data_flags, os.path.join(args.job_root, row.key), args.seed,
                                  row.published))
    if FINE_TUNING in chosen:
        measured += fine_tuning_rows(args)

    import tensorflow as tf

    from trainer import data
    from trainer.benchmarks import markdown

    # The data as inspected, not as assumed: a smoke run on the bundled sample is no full MNIST.
    train_size, eval_size = (data.inspect_input((pattern,), flag, (28, 28, 1), 10).size
                             for flag, pattern in zip(data_flags[::2], data_flags[1::2]))
    table = "\n".join([
        f"{train_size:,} training / {eval_size:,} test digits ({args.train_files} / "
        f"{args.eval_files}), TensorFlow {tf.__version__}, "
        f"{markdown.hardware()} (load average {markdown.load_average()}), seed {args.seed}, "
        "float32.",
        "",
        "| row | flags | steps | test accuracy | examples/s | wall | published |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(m.line() for m in measured), ""])
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
