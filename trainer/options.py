"""Dataclass fields that carry their own command-line flag, and the parser made from them (no TF).

A field declared with `flag(...)` is one flag: its spelling, type, default, help and the check
its value must pass live on the field, so adding a flag is adding a field. A field declared with
`resolved(...)` is given by several flags (or one flag and the environment): the flags are
declared there too, and the config resolves the field's value from them. Every flag also takes
its underscore spelling (`--learning_rate`), as tuning services pass them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator


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


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class Check:
    """What a given value must satisfy, and how the error says it ("must be positive")."""

    accepts: Callable[[Any], bool]
    expected: str


POSITIVE = Check(lambda value: value > 0, "must be positive")  # also rejects NaN
NOT_NEGATIVE = Check(lambda value: value >= 0, "must not be negative")
FRACTION = Check(lambda value: 0 <= value < 1, "must be in [0, 1)")
# Integer flags end up in TensorFlow's int64 tensors (a shuffle buffer, a step count), which
# cannot hold more: a larger value would fail there with a traceback.
INT64_MAX = 2 ** 63 - 1


def _shown(value) -> str:
    """A value as an error quotes it: 1e30 given to an integer flag reads 1e+30, not 31 digits."""
    return f"{value:.3g}" if isinstance(value, int) and abs(value) >= 10 ** 16 else f"{value}"


@dataclass(frozen=True)
class Option:
    """One flag: `--name` (and `--name_with_underscores`), read into `dest`."""

    name: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    help: str | None = None
    choices: tuple | None = None
    metavar: str | None = None
    check: Check | None = None  # applied to a given value (None is never checked)
    switch: bool = False  # `--name` alone means true; `--name=false` also parses

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def spelling(self) -> str:
        return f"--{self.name}"

    def add_to(self, group) -> None:
        spellings = [self.spelling] + ([f"--{self.dest}"] if self.dest != self.name else [])
        kwargs = {"default": self.default, "help": self.help, "choices": self.choices,
                  "metavar": self.metavar}
        if self.switch:
            kwargs.update(type=boolean, nargs="?", const=True, metavar=self.metavar or "BOOL")
        elif self.type is not None:
            kwargs["type"] = self.type
        group.add_argument(*spellings, dest=self.dest,
                           **{k: v for k, v in kwargs.items() if v is not None})

    def problem(self, value) -> str | None:
        """The one-line error for a given value that fails the check (or, for an integer flag,
        does not fit 64 bits), else None."""
        if value is None:
            return None
        if self.check is not None and not self.check.accepts(value):
            return f"{self.spelling} {self.check.expected}, got {_shown(value)}"
        if self.type is integer and not -INT64_MAX - 1 <= value <= INT64_MAX:
            return (f"{self.spelling} must fit a 64-bit integer (at most {INT64_MAX:,}), "
                    f"got {_shown(value)}")
        return None


def flag(name: str, default: Any = None, type: Callable[[str], Any] | None = None,
         **option) -> Any:
    """A field set by one flag, whose value it keeps unless the config resolves it further
    (a None default the config replaces, e.g. by the model's own value, says so in `help`)."""
    return dataclasses.field(default=default,
                             metadata={"options": (Option(name, default, type, **option),)})


def resolved(*options: Option) -> Any:
    """A field the config resolves from these flags (and the environment)."""
    return dataclasses.field(metadata={"options": options})


def options_of(section) -> Iterator[tuple[dataclasses.Field, Option]]:
    """(field, option) for each flag of a section class, in declaration order."""
    for field in dataclasses.fields(section):
        for option in field.metadata.get("options", ()):
            yield field, option


def add_section(parser: argparse.ArgumentParser, title: str, section) -> None:
    """The section's flags as one help group, described by its docstring's first line."""
    description = (section.__doc__ or "").strip().splitlines()[0] or None
    group = parser.add_argument_group(title, description)
    for _, option in options_of(section):
        option.add_to(group)


def given(section, args: argparse.Namespace, **resolved_values):
    """The section from parsed flags: a one-flag field takes its flag's value unless it is in
    `resolved_values`, which must hold every other field."""
    values = {field.name: getattr(args, option.dest) for field, option in options_of(section)
              if len(field.metadata["options"]) == 1 and field.name not in resolved_values}
    return section(**values, **resolved_values)
