"""What `vertex-trainer tune` and `tune-submit` share: the config argument, --set, the trial
counts, and the trainer flags after `--`."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from trainer.errors import TrainerError

_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
SHIPPED = Path(__file__).resolve().parent  # the studies installed with the package


def add_common(parser: argparse.ArgumentParser, parallel_default: str) -> None:
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    parser.add_argument("config", type=config_path,
                        help=f"tuning config (YAML), or a shipped study by name ({names})")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="value of a ${NAME} placeholder in the config (repeatable); "
                             "default: the environment variable NAME")
    parser.add_argument("--max-trials", type=_positive, metavar="N",
                        help="trials in the study (default: the config's maxTrialCount)")
    parser.add_argument("--parallel-trials", type=_positive, metavar="N",
                        help=f"trials at a time (default: {parallel_default})")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def config_path(text: str) -> str:
    """The config file: the path as given, else the shipped study of that name (`cnn`,
    `hptuning/cnn.yaml` outside a checkout)."""
    if Path(text).exists():
        return text
    shipped = SHIPPED / Path(text).name
    shipped = shipped if shipped.suffix else shipped.with_suffix(".yaml")
    return str(shipped) if shipped.is_file() else text


def placeholder_values(assignments: Sequence[str],
                       defaults: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment, overridden by `defaults` (values of other flags), then by --set."""
    values = {**os.environ, **defaults}
    for assignment in assignments:
        match = _ASSIGNMENT.fullmatch(assignment)
        if not match:
            raise TrainerError(f"--set {assignment!r}: expected NAME=VALUE")
        values[match.group(1)] = match.group(2)
    return values

