"""`vertex-trainer COMMAND [flags]`: each step from a folder of photos to a live endpoint.

One table maps a command to the module that runs it. A module is imported only when its command
runs, so every `--help` answers without importing TensorFlow. With no command, or flags first,
the command is `train` (`vertex-trainer --max-steps 100` trains), as `python -m trainer.task`.
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn, Sequence

from trainer.cli import exit_with

PROG = "vertex-trainer"

# name -> (module with main(argv) -> int, one line of help)
COMMANDS = {
    "launch": ("trainer.cloud.launch", "photos -> prepared data -> images -> training -> a live "
                                       "endpoint, on Vertex AI or --local (--dry-run: the plan)"),
    "train": ("trainer.task", "train, evaluate and export a model (the default command; what a "
                              "Vertex job runs)"),
    "predict": ("trainer.predict", "run an export over images, folders, manifests or TFRecords"),
    "serve": ("trainer.serve", "serve an export over HTTP on Vertex's container contract"),
    "prepare": ("trainer.tools.prepare_images",
                "photos (folders, CSV/JSONL, CIFAR) -> encoded-image TFRecords"),
    "sample-photos": ("trainer.tools.digit_photos", "the bundled MNIST sample as a folder of "
                                                    "small PNG/JPEG photos to try the commands on"),
    "prepare-mnist": ("trainer.tools.prepare_mnist", "MNIST-format idx files -> TFRecords"),
    "verify": ("trainer.tools.verify_dataset", "read every record of a dataset as training would"),
    "tune": ("hptuning.__main__", "run a hyperparameter-tuning study on this machine"),
    "tune-submit": ("hptuning.submit", "create the study as a Vertex hyperparameter-tuning job"),
    "submit": ("trainer.cloud.submit", "run training as a Vertex custom job (or a training "
                                       "pipeline over a managed dataset)"),
    "deploy": ("trainer.cloud.deploy", "upload an export to the Model Registry, deploy it to an "
                                       "endpoint"),
    "batch-predict": ("trainer.cloud.batch_predict",
                      "predict a file list or JSONL as a Vertex batch prediction job (or --local)"),
    "cluster": ("trainer.tools.local_cluster",
                "rehearse a Vertex cluster (chief, workers, ps, evaluator) on this machine"),
    "reproduce": ("trainer.tools.reproduce_tutorials", "reproduce the tutorials' accuracy table"),
    "benchmark": ("trainer.benchmarks.training", "measure training speed, accuracy and memory "
                                                 "into BENCHMARKS.md"),
    "benchmark-serving": ("trainer.benchmarks.serving", "measure the prediction server"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} [COMMAND] [flags]", "",
             "commands (`" + PROG + " COMMAND --help` for each; no command means train):"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name = "train"
    if argv and not argv[0].startswith("-"):
        name = argv.pop(0)
        if name not in COMMANDS:
            print(usage(), file=sys.stderr)
            print(f"error: unknown command {name!r}; expected one of {', '.join(COMMANDS)}",
                  file=sys.stderr)
            return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(argv)


def cli() -> NoReturn:
    """The `vertex-trainer` console script and `python -m trainer`."""
    exit_with(main())


def run_command(name: str) -> NoReturn:
    """`scripts/*.py`: one command under its old path, with this process's arguments."""
    exit_with(main([name, *sys.argv[1:]]))
