"""What every input is, whatever its kind: the `Source` protocol, and how a kind is detected.

Each kind of input is one module holding its source class and a `Detector`: a test of the
input's layout or first bytes (`matches`) and an `inspect` that checks the input up front and
returns its `Source`. `plan.DETECTORS` lists the detectors in the order they are tried, and is
where a new kind is registered. The pipeline, the bad-image scan, `predict` and `verify` only ask
a source the questions of the protocol below, never which class it is.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Protocol

from trainer import storage
from trainer.errors import TrainerError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
RECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr", ".gz", ".zz")
# What encoded images decode to for a model: grey or RGB (alpha dropped), as the server does too.
ENCODED_CHANNELS = (1, 3)
_HEAD = 256
# Bytes that never occur in a text manifest, whatever its encoding (UTF-16 aside, told by its
# byte-order mark): control characters other than tab, line feed, form feed and carriage return.
_BINARY = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D} | {0x7F}
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class Terms:
    """How the command reading a source names what the data is checked against, for errors."""

    image_shape: str = "--image-height/--image-width/--image-channels"
    num_classes: str = "--num-classes"
    skip_hint: str | None = "--skip-corrupt-images skips such images"


TRAINER_TERMS = Terms()


@dataclass(frozen=True)
class Classes:
    """The label map a run uses: names (None for bare integer labels) and their count."""

    names: tuple[str, ...] | None
    num_classes: int
    origin: str  # where the names come from, for errors


@dataclass(frozen=True)
class Request:
    """One input to inspect, and what it must agree with."""

    patterns: tuple[str, ...]
    origin: str  # names the input in errors: the flag, Vertex variable or argument
    split: str | None  # the ml_use split it reads (training, validation, test); None: all
    split_origin: str  # what chose the split, for errors ("--eval-files", "--split test")
    image_shape: tuple[int, int, int]
    num_classes: int | None  # as given; None: inferred
    label_map: str | None
    classes: Classes | None  # the training data's; None when this data defines them
    terms: Terms = TRAINER_TERMS
    labels_required: bool = True  # False: images of no known class are read without labels


@dataclass(frozen=True, kw_only=True)
class Inspected:
    """The fields every kind of source shares (what `Source` asks of it); `of` fills those a
    request and its label map decide."""

    flag: str
    files: tuple[str, ...]
    description: str
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None
    terms: Terms
    size: int | None  # examples, counted at inspection; None when unknown

    @staticmethod
    def of(request: Request, classes: Classes) -> dict:
        return dict(flag=request.origin, image_shape=tuple(request.image_shape),
                    num_classes=classes.num_classes, class_names=classes.names,
                    terms=request.terms)


class Source(Protocol):
    """An inspected input: everything the pipeline and the tools need to read it.

    `units` streams what one input pipeline reads: its shard of the data, shuffled and repeated
    for training, in a fixed order for evaluation. A source that `parses_batches` is batched as
    units and parsed by `parse_batch` into (float32 images [B, H, W, C] in [0, 1], int32 labels
    [B]); any other source parses each unit with `parse_one` into (data, int32 label, where),
    where `read(data)` gives the encoded image, which the pipeline decodes, and `where` names the
    unit in errors.
    """

    flag: str  # names the input in errors
    description: str  # what the examples are, for the log ("image(s) in class folders")
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None
    labelled: bool  # False: every label is -1 (images of no known class, for predict)
    parses_batches: bool
    terms: Terms
    size: int | None  # examples in the source; None when unknown

    def units(self, *, training: bool, shuffle_buffer: int, seed: int | None, input_context,
              repeat: bool = True):
        """A tf.data.Dataset of units for one input pipeline; training units are repeated
        forever unless `repeat` is false (then one shuffled epoch: what --cache is filled
        from)."""

    def parse_batch(self, units):
        """Batched units -> (images, labels) (sources that parse batches)."""

    def parse_one(self, *unit):
        """One unit -> (data, label, where) (the other sources)."""

    def read(self, data):
        """The encoded image bytes of `parse_one`'s data."""

    def name_image(self, data) -> str:
        """How an error names the image of `parse_one`'s data: "image URI", "the image"."""

    def example_names(self):
        """A tf.data.Dataset of one string per example, in evaluation order (predict's lines)."""

    def explain(self, err: Exception) -> TrainerError | None:
        """A one-line error for what this kind of source knows of a failure, else None."""

    def fingerprint(self) -> str:
        """What a --cache of this source's images is keyed by (`fingerprint` below): a cache
        made from other inputs, labels or image size is never read."""


def fingerprint(parts: tuple, paths: tuple[str, ...]) -> str:
    """A digest of `parts` (what the source reads, in order) and the size and modification
    time of each local file among `paths`, so that a file edited in place changes it too.
    Remote objects (gs://) count by name only: a stat each would cost a request each."""
    digest = hashlib.sha256(repr(parts).encode("utf-8"))
    for path in paths:
        if not storage.is_url(path):
            try:
                stat = os.stat(path)
            except OSError:
                continue  # the pipeline names a missing file when it gets there
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


class Probe:
    """What detection looks at: a folder, or the files the patterns match and the first bytes
    of the first one (each read once, when a detector first asks)."""

    def __init__(self, patterns: tuple[str, ...], origin: str, ignored: Callable[[str], bool]):
        self.patterns, self.origin = patterns, origin
        self._ignored = ignored
        self.folder = patterns[0].rstrip("/") if len(patterns) == 1 and is_folder(
            patterns[0]) else None

    @functools.cached_property
    def files(self) -> list[str]:
        files = [f for f in storage.expand_patterns(self.patterns, self.origin)
                 if not self._ignored(f)]
        if not files:
            raise TrainerError(f"{self.origin}: no data file matches {', '.join(self.patterns)}")
        return files

    @functools.cached_property
    def head(self) -> bytes:
        import tensorflow as tf

        try:
            return storage.read_head(self.files[0], _HEAD)
        except tf.errors.OpError as err:
            raise TrainerError(f"{self.origin}: cannot read {self.files[0]} "
                               f"({storage.problem(err, self.files[0])})") from None

    def holds(self, name: str) -> bool:
        """Whether the folder, or the first file's folder, holds a file of this name."""
        folder = self.folder or storage.dirname(self.files[0])
        return storage.exists(storage.join(folder, name))

    def named(self, suffixes: tuple[str, ...]) -> list[bool]:
        return [path.lower().endswith(suffixes) for path in self.files]

    @property
    def text(self) -> bool:
        """Whether the first file reads as text of some encoding (not whether it is UTF-8)."""
        return self.head.startswith(_UTF16_MARKS) or not _BINARY.intersection(self.head)


def is_folder(pattern: str) -> bool:
    import tensorflow as tf

    return not any(c in pattern for c in "*?[") and tf.io.gfile.isdir(pattern)


@dataclass(frozen=True)
class Detector:
    kind: str
    matches: Callable[[Probe], bool]
    inspect: Callable[[Probe, Request], Source]
