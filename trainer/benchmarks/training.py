"""`vertex-trainer benchmark`: measure the trainer on this machine, as markdown tables.

    vertex-trainer benchmark --train-files '/tmp/mnist/train-*' --eval-files '/tmp/mnist/eval-*'
    vertex-trainer benchmark --only jpeg

Runs the sections below in order (or those `--only` names), prints their tables and writes them
into --output (default ./BENCHMARKS.md), under this machine's hardware heading: each table
replaces its older version there, the rest of the file is kept. The whole run takes about 45
minutes on 2 cores. `--smoke` runs every count tiny, to check that the sections work: its
numbers mean nothing, and it writes a file only when --output is given, under a heading of its
own. Sections live in trainer/benchmarks/sections/ (one module each; see its __init__).
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import os
import platform
import sys
import time
from typing import Sequence

from trainer.benchmarks import markdown, runner
from trainer.cli import OneLineParser, UsageError, run_cli
from trainer.errors import TrainerError

# name -> (the data flags it needs, one line of help), in the order a full run takes them. The
# module trainer.benchmarks.sections.<name> measures it.
SECTIONS = {
    "estimator": (("train",), "our loop against tf.estimator (TF 2.15) on the cnn, fp32 and "
                              "auto, alternating"),
    "breakdown": (("train",), "where a cnn training step's time goes"),
    "pipeline": (("train",), "the TFRecord input pipeline against a raw read"),
    "jpeg": ((), "the encoded-JPEG pipeline against a bare decode loop and keras "
                 "image_dataset_from_directory (writes its own JPEGs)"),
    "photos": (("train", "eval"), "MNIST digits as a folder of small PNG/JPEG photos: 5 "
                                  "epochs of input with --cache memory against uncached and "
                                  "keras .cache(); time to 98% test accuracy"),
    "resnet": (("train", "eval"), "resnet20 at 32x32x3: ours against fit, bf16 against fp32 in "
                                  "speed and accuracy, its step breakdown"),
    "speed": (("train",), "examples/s per model: fp32, bf16, XLA and Keras fit"),
    "accuracy": (("train", "eval"), "cnn on full MNIST in bf16 and fp32: accuracy per "
                                    "evaluation, time to 99%"),
    "resources": (("train", "eval"), "peak RSS, import RSS (TF 2.21 and 2.15), export and "
                                     "--help times"),
}


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="vertex-trainer benchmark", allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        epilog="sections: " + "; ".join(f"{name}: {text}"
                                        for name, (_, text) in SECTIONS.items()))
    p.add_argument("--train-files", metavar="PATTERNS",
                   help="comma-separated TFRecord globs of the MNIST training set (raw pixels, "
                        "as `vertex-trainer prepare-mnist` writes them)")
    p.add_argument("--eval-files", metavar="PATTERNS", help="the same for the MNIST test set")
    p.add_argument("--only", type=_sections, metavar="SECTION[,SECTION...]",
                   help=f"run these sections only (of {', '.join(SECTIONS)})")
    p.add_argument("--output", metavar="PATH",
                   help="the markdown file to merge the tables into (default: ./BENCHMARKS.md; "
                        "with --smoke, none)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny counts (1 round, a few steps): checks that the sections run; the "
                        "numbers mean nothing")
    return p


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise UsageError(f"--only {text!r}: expected sections among {', '.join(SECTIONS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        names = args.only or tuple(SECTIONS)
        for name in names:
            for flag in SECTIONS[name][0]:
                if not getattr(args, f"{flag}_files"):
                    parser.error(f"section {name} needs --{flag}-files")
        for flag in ("train", "eval"):
            _check_matches(f"--{flag}-files", getattr(args, f"{flag}_files"))
        output = args.output or (None if args.smoke else "BENCHMARKS.md")
        context = runner.Context(args.train_files, args.eval_files,
                                 runner.SMOKE if args.smoke else runner.FULL, runner.clock())
        hardware = markdown.hardware() + (" - smoke run, numbers meaningless" if args.smoke
                                          else "")
        tables = "\n\n".join(_measure(name, context) for name in names)
        print(f"## {hardware}\n\n{tables}")
        if output:
            _write(output, hardware, tables)
            context.say(f"wrote {output}")
        return 0

    return run_cli(body)


def _check_matches(flag: str, patterns: str | None) -> None:
    """Local patterns must match files now, not after the sections before them ran."""
    for pattern in (patterns or "").split(","):
        if pattern and "://" not in pattern and not glob.glob(pattern):
            raise UsageError(f"{flag} {pattern!r} matches no file")


def _measure(name: str, context: runner.Context) -> str:
    """The section's tables, closed by a line saying when and how they were measured."""
    module = importlib.import_module(f"trainer.benchmarks.sections.{name}")
    load_before = markdown.load_average()
    lines = module.run(context)
    budget = context.budget
    return "\n".join([
        *lines, "",
        f"Measured on {time.strftime('%Y-%m-%d')} (`vertex-trainer benchmark --only {name}`): "
        f"TensorFlow {importlib.metadata.version('tensorflow')}, Python "
        f"{platform.python_version()}; medians of {budget.rounds} alternating rounds after a "
        f"warm-up call (training rounds: {budget.steps_per_call} steps); load average "
        f"(1/5/15 min) {load_before} at the start, {markdown.load_average()} at the end."])


def _write(path: str, hardware: str, tables: str) -> None:
    existing = ""
    try:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                existing = f.read()
        merged = markdown.merge(existing, hardware, tables)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(merged)
        os.replace(path + ".tmp", path)
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise TrainerError(f"--output {path}: cannot write the tables ({reason}); "
                                  "they are printed above") from None


if __name__ == "__main__":
    sys.exit(main())
