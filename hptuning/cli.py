"""What the tuner's and the submit script's command lines share: the config argument, --set."""

from __future__ import annotations

import argparse
import os
import re
from typing import Mapping, Sequence

from trainer.errors import TrainerError

_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="tuning config (YAML), e.g. hptuning/cnn.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="value of a ${NAME} placeholder in the config (repeatable); "
                             "default: the environment variable NAME")


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

