"""Tuning parameters as the trainer sees them: its flag table, and whether it accepts a value.

Everything here comes from `trainer.config` (`build_parser`, `config_from_flags`, `METRICS`),
which never imports TensorFlow, so a config is checked in milliseconds and the trainer stays
the single owner of its flags and their limits. Functions return a reason (a string) for what
is wrong, or None; the caller knows which file and field to blame.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from trainer.cli import UsageError
from trainer.cloud.checks import first_local_path
from trainer.config import (DEFAULT_MAX_STEPS, METRICS, build_parser, config_from_flags,
                            integer, number)
from trainer.errors import TrainerError

# Picks the metric the trainer reports; tuning it would change what the study measures.
_METRIC_FLAG = "hypertune_metric"


@dataclass(frozen=True)
class Flag:
    name: str  # as --help spells it: learning-rate
    dest: str  # learning_rate
    type: Callable | None
    choices: tuple[str, ...] | None

    def takes(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return {int: "an integer", float: "a number"}.get(self.type, "a non-numeric value")


def trainer_flags() -> dict[str, Flag]:
    """Every flag that takes a value, under both its spellings (learning-rate, learning_rate)."""
    flags = {}
    # argparse has no public way to list its options; `_actions` is stable since Python 3.2.
    for action in build_parser()._actions:
        if not action.option_strings or action.nargs == 0:  # --help
            continue
        name = action.option_strings[0][2:]
        kind = {integer: int, number: float}.get(action.type, action.type)
        flag = Flag(name, action.dest, kind, tuple(action.choices) if action.choices else None)
        flags[name] = flags[action.dest] = flag
    return flags


def unknown_flag_reason(parameter_id: str, flags: dict[str, Flag]) -> str:
    close = difflib.get_close_matches(parameter_id, flags, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{parameter_id!r} is not a trainer flag{hint}; `python -m trainer.task --help` "
            "lists them")


def kind_reason(flag: Flag, kind: str, values: Sequence = ()) -> str | None:
    """Why values of this kind (double, integer, discrete, categorical) cannot go to the flag."""
    if flag.dest == _METRIC_FLAG:
        return ("--hypertune-metric cannot be tuned: it must stay the study's metricId "
                "(set it in the trainer args)")
    if kind == "categorical":
        if flag.choices:
            bad = [v for v in values if v not in flag.choices]
            if bad:
                return f"{bad[0]!r} is not a choice of --{flag.name} ({', '.join(flag.choices)})"
        return None
    if flag.type not in (int, float) or flag.choices:
        return (f"--{flag.name} takes {flag.takes()}; use categoricalValueSpec, not "
                f"{kind}ValueSpec")
    if flag.type is int and kind == "double":
        return (f"--{flag.name} takes an integer; use integerValueSpec or discreteValueSpec, "
                "not doubleValueSpec")
    if flag.type is int and kind == "discrete":
        fractional = [v for v in values if not float(v).is_integer()]
        if fractional:
            return f"--{flag.name} takes an integer, not {fractional[0]:g}"
    return None


def flag_text(value) -> str:
    """A value as it goes on the command line: integral numbers without '.0', so int flags
    accept DISCRETE values (protobuf doubles) and float flags still parse them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def rejection(args: Sequence[str]) -> str | None:
    """The trainer's own one-line complaint about these flags, if any (no TensorFlow, no I/O)."""
    try:
        config_from_flags(list(args), {})
    except UsageError as err:
        # The trainer's own --help lists its flags, not the tuner's.
        return str(err).replace("(see --help)", "(see `vertex-trainer train --help`)")
    except TrainerError as err:
        return str(err)
    return None


def data_reason(args: Sequence[str]) -> str | None:
    """Why trials with these (accepted) flags would have no data of the user's, or None. The
    trainer falls back to its bundled MNIST sample; a study must ask for that explicitly."""
    parsed = build_parser().parse_args(list(args))
    if parsed.train_files or parsed.bundled_sample:
        return None  # --train-files without --eval-files is the trainer's own error
    return ("neither the config's trainer args nor those after -- give --train-files and "
            "--eval-files; add them after -- (`-- --train-files PATTERNS --eval-files "
            "PATTERNS`), or `-- --bundled-sample` to tune on the bundled MNIST sample")


def local_path(args: Sequence[str]) -> tuple[str, str] | None:
    """(flag, path) of the first path flag whose value a Vertex trial cannot reach (neither
    gs:// nor /gcs/), or None."""
    return first_local_path(build_parser().parse_args(list(args)))


def reported_metric(args: Sequence[str]) -> str:
    """The metric the trainer reports to hypertune with these flags (the last --hypertune-metric
    wins, as in argparse)."""
    return build_parser().parse_args(list(args)).hypertune_metric


def trainer_max_steps(args: Sequence[str], tuned: Iterable[str] = ()) -> int | None:
    """The --max-steps the trainer runs to with these flags; None when it trains --epochs
    (given, or a tuned parameterId): then each trial's steps follow its batch size."""
    parsed = build_parser().parse_args(list(args))
    if parsed.epochs is not None or "epochs" in set(tuned):
        return None
    return parsed.max_steps or DEFAULT_MAX_STEPS


def metric_reason(metric_id: str) -> str | None:
    if metric_id in METRICS:
        return None
    return f"{metric_id!r} is not a metric the trainer reports ({', '.join(sorted(METRICS))})"


def dest_of(arg: str) -> str | None:
    """The flag an argument sets (`--learning-rate=0.1` -> learning_rate), None for a value."""
    if not arg.startswith("--"):
        return None
    return arg[2:].split("=", 1)[0].replace("-", "_")
