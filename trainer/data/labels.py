"""Label maps: class names <-> indices (pure Python).

A label map is a list of class names; index i names class i. For data labelled by name it is
built from the training data (sorted, so the same data always gives the same map) unless
--label-map fixes it. The file form is one name per line (labels.txt), written beside the
checkpoints and inside the export.
"""

from __future__ import annotations

from typing import Iterable

from trainer.errors import TrainerError

FILE_NAME = "labels.txt"


def build(names: Iterable[str]) -> list[str]:
    return sorted(set(names))


def text_of(class_names: list[str]) -> str:
    return "".join(f"{name}\n" for name in class_names)


def parse(text: str, path: str, source: str) -> list[str]:
    """Class names from a labels file's text; raises TrainerError for empty or repeated lines."""
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, 1):
        if not name:
            raise TrainerError(f"{source}: {path} line {number} is empty; expected one label "
                               "per line")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TrainerError(f"{source}: {path} repeats the label(s) {', '.join(repeated)}")
    if len(names) < 2:
        raise TrainerError(f"{source}: {path} has {len(names)} label(s); expected at least 2")
    return names


def indices(labels: Iterable[tuple[str, str]], class_names: list[str], origin: str,
            classes_origin: str) -> list[int]:
    """Indices of (label, where) pairs; a label outside the map is an error naming it."""
    index = {name: i for i, name in enumerate(class_names)}
    result = []
    for label, where in labels:
        if label not in index:
            raise TrainerError(f"{origin}: {where}: label {label!r} is not one of the classes "
                               f"of {classes_origin} ({_preview(class_names)})")
        result.append(index[label])
    return result


def check_num_classes(num_classes: int | None, class_names: list[str], origin: str) -> int:
    if num_classes is not None and num_classes != len(class_names):
        raise TrainerError(f"--num-classes is {num_classes} but {origin} has "
                           f"{len(class_names)} classes ({_preview(class_names)}); omit "
                           "--num-classes to infer it")
    return len(class_names)


def check_resume(saved: list[str], current: list[str], path: str) -> None:
    """A checkpoint's classes must be the data's: otherwise index i would change meaning."""
    if saved != current:
        raise TrainerError(f"the checkpoints' label map {path} ({_preview(saved)}) differs from "
                           f"this data's ({_preview(current)}); use another --job-dir or "
                           "AIP_CHECKPOINT_DIR")


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown
