"""Which source each file flag holds, detected once up front, and the label map they share.

`DETECTORS` are the input kinds in the order they are tried on a flag's patterns: the first whose
detector matches (a folder's layout, or the first bytes of the first matched file: TFRecord
framing means records, raw pixels or `image/encoded` as the first record says; text means a
JSONL/CSV manifest) inspects it. Adding a kind is one module with a Detector, listed here. The
label map comes from the training data: class names sorted when the data names its classes
(manifests, folders), the dataset's own (TFDS), else --label-map or a labels.txt beside the
training records; --num-classes is inferred from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trainer.cli import UsageError
from trainer.data import encoded_records, image_files, manifests, raw_records, record_guard, \
    tfds
from trainer.data.source import ENCODED_CHANNELS, IMAGE_SUFFIXES, Classes, Probe, Request, Source
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

DETECTORS = (
    tfds.DETECTOR,
    image_files.CLASS_FOLDERS,
    encoded_records.DETECTOR,
    image_files.IMAGES,
    raw_records.DETECTOR,
    image_files.MANIFESTS,
)


@dataclass(frozen=True)
class DataPlan:
    train: Source
    eval: Source
    test: Source | None
    class_names: tuple[str, ...] | None
    num_classes: int

    def sources(self) -> list[Source]:
        return [s for s in (self.train, self.eval, self.test) if s is not None]


def inspect(request: Request) -> Source:
    """The source the request's patterns hold, checked up front by its kind."""
    probe = Probe(request.patterns, request.origin, record_guard.is_cache)
    if probe.folder is None:
        images = probe.named(IMAGE_SUFFIXES)
        if any(images) and not all(images):
            raise TrainerError(f"{request.origin}: give image files or data files (TFRecords, "
                               f"manifests), not both: {probe.files[images.index(True)]}, "
                               f"{probe.files[images.index(False)]}")
    detector = next(d for d in DETECTORS if d.matches(probe))
    return detector.inspect(probe, request)


def _inspect(flag: str, origin: str, patterns: tuple[str, ...], image_shape,
             classes: Classes | None, num_classes: int | None, label_map: str | None):
    """(source, classes); `classes` None means this is the training data, which defines them."""
    source = inspect(Request(tuple(patterns), origin, manifests.FLAG_ML_USE[flag], flag,
                             tuple(image_shape), num_classes, label_map, classes))
    if not source.parses_batches and image_shape[2] not in ENCODED_CHANNELS:
        raise UsageError(f"--image-channels must be 1 (grey) or 3 (RGB) for encoded images "
                         f"({describe(source)}), got {image_shape[2]}")
    return source, classes or Classes(source.class_names, source.num_classes, origin)


def inspect_input(patterns: tuple[str, ...], flag: str, image_shape, num_classes: int | None,
                  class_names=None, label_map: str | None = None) -> Source:
    """One flag's source, checked up front; `class_names` given, its labels must be among them."""
    classes = None if class_names is None else Classes(
        tuple(class_names), len(class_names), "the label map")
    return _inspect(flag if flag in manifests.FLAG_ML_USE else "--train-files", flag,
                    tuple(patterns), image_shape, classes, num_classes, label_map)[0]


def resolve(config) -> DataPlan:
    """The sources of a run (a trainer.config.DataConfig), the training data first."""
    files = config.files
    image_shape, num_classes, label_map = config.image_shape, config.num_classes, \
        config.label_map
    train, classes = _inspect("--train-files", files.origin("--train-files"), files.train,
                              image_shape, None, num_classes, label_map)
    evaluation, _ = _inspect("--eval-files", files.origin("--eval-files"), files.eval,
                             image_shape, classes, num_classes, label_map)
    test = None
    if files.test:
        test, _ = _inspect("--test-files", files.origin("--test-files"), files.test,
                           image_shape, classes, num_classes, label_map)
    return DataPlan(train, evaluation, test, classes.names, classes.num_classes)


def describe(source: Source) -> str:
    count = "" if source.size is None else f"{source.size:,} "
    return f"{count}{source.description} from {source.flag}"

