"""Label maps: class names <-> indices (pure Python).

A label map is a list of class names; index i names class i. For data labelled by name it is
built from the training data (sorted, so the same data always gives the same map) unless
--label-map fixes it. The file form is one name per line (labels.txt), written inside the
export; the checkpoints keep theirs in the run record (trainer.run_record). A name that one line
cannot hold as itself (a line break, whitespace at either end) is refused when the map is
built, so the export's labels.txt always reads back as the map it was written from.
"""

from __future__ import annotations

import unicodedata
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


def name_problem(name: str) -> str | None:
    """Why a class name cannot be one line of labels.txt and read back as itself, or None."""
    if not name.strip():
        return "is empty"
    if name != name.strip():
        return "starts or ends with whitespace"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "holds a line break or another control character"
    return None


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


def check_names(named: Iterable[tuple[str, str]], origin: str) -> None:
    """(name, where) pairs the training data itself gives (manifests, folders): within the
    bounds of a labels file's, and each a name that survives labels.txt (written beside the
    export, one per line, and read back stripped), or refused up front."""
    named = list(named)
    _check_count(named, origin)
    for name, where in named:
        check_name(name, f"{origin}: {where}")
        problem = name_problem(name)
        if problem:
            raise TrainerError(f"{origin}: {where}: the class name {name!r} {problem}; rename "
                               "that class (its folder or label): labels.txt keeps one name "
                               "per line")


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


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown
