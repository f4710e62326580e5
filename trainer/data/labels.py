"""Label maps: class names <-> indices (pure Python).

A label map is a list of class names; index i names class i. For data labelled by name it is
built from the training data (sorted, so the same data always gives the same map) unless
--label-map fixes it. The file form is one name per line (labels.txt), written beside the
checkpoints and inside the export.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from trainer.data import text
from trainer.errors import TrainerError

FILE_NAME = "labels.txt"
# Every name goes into the export (labels.txt and each signature's `labels` lookup): a 30 MB
# line made a 4.5 MB export 119 MB. Vertex's display names take 128 characters and folder names
# 255 bytes; ImageNet-21k has 21,841 classes, iNaturalist 2021 10,000.
MAX_NAME_CHARS = 256
MAX_CLASSES = 100_000
MAX_FILE_BYTES = MAX_CLASSES * (4 * MAX_NAME_CHARS + 2)  # UTF-8: up to 4 bytes a character


def build(names: Iterable[str]) -> list[str]:
    return sorted(set(names))


def text_of(class_names: list[str]) -> str:
    return "".join(f"{name}\n" for name in class_names)


def read(path: str, source: str) -> list[str]:
    """The class names of a labels file, read no further than a valid one can be long."""
    return parse(text.read(path, source, max_bytes=MAX_FILE_BYTES), path, source)


def parse(content: str, path: str, source: str) -> list[str]:
    """Class names from a labels file's text; raises TrainerError for empty, repeated or
    overlong lines, or more names than MAX_CLASSES."""
    names = [line.strip() for line in content.splitlines()]
    while names and not names[-1]:
        names.pop()
    _check_count(names, f"{source}: {path}")
    for number, name in enumerate(names, 1):
        if not name:
            raise TrainerError(f"{source}: {path} line {number} is empty; expected one label "
                               "per line")
        check_name(name, f"{source}: {path} line {number}")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise TrainerError(f"{source}: {path} repeats the label(s) {', '.join(repeated)}")
    if len(names) < 2:
        raise TrainerError(f"{source}: {path} has {len(names)} label(s); expected at least 2")
    return names


def check_names(names: list[str], where: str) -> None:
    """Class names the data itself gives (manifests, folders) within the bounds of a file's."""
    _check_count(names, where)
    for name in names:
        check_name(name, where)


def _check_count(names: list[str], where: str) -> None:
    if len(names) > MAX_CLASSES:
        raise TrainerError(f"{where} has {len(names):,} labels; at most {MAX_CLASSES:,} are "
                           "taken")


def check_name(name: str, where: str) -> None:
    """A class name no longer than MAX_NAME_CHARS; `where` names it in the error."""
    if len(name) > MAX_NAME_CHARS:
        raise TrainerError(f"{where}: a class name of {len(name):,} characters ({name[:20]!r}"
                           f"...); at most {MAX_NAME_CHARS} are taken")


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
