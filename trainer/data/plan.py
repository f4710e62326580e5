"""Which source each file flag holds, detected once up front, and the label map they share.

Detection reads the first bytes of the first matched file: TFRecord framing means records (raw
pixels or `image/encoded`, told apart by the first record's features), text means a JSONL/CSV
manifest; a folder (no wildcard) means ROOT/CLASS/image files. The label map comes from the
training data: class names sorted when the data names its classes (manifests, folders), else
--label-map or a labels.txt beside the training records; --num-classes is inferred from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Union

from trainer import storage
from trainer.data import encoded_records, image_files, labels, manifests, raw_records, tfrecords
from trainer.data.encoded_records import EncodedRecords
from trainer.data.image_files import ImageFiles
from trainer.data.raw_records import RawRecords
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

InputSource = Union[RawRecords, EncodedRecords, ImageFiles]
DEFAULT_NUM_CLASSES = 10  # MNIST's, the bundled sample's
_RECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr", ".gz", ".zz")


@dataclass(frozen=True)
class DataPlan:
    train: InputSource
    eval: InputSource
    test: InputSource | None
    class_names: tuple[str, ...] | None
    num_classes: int

    def sources(self) -> list[InputSource]:
        return [s for s in (self.train, self.eval, self.test) if s is not None]


@dataclass(frozen=True)
class _Classes:
    names: tuple[str, ...] | None
    num_classes: int
    origin: str  # where the names come from, for errors


def _detect(patterns: tuple[str, ...], origin: str) -> tuple[str, list[str]]:
    """('folder' | 'records' | 'manifest', the paths)."""
    if len(patterns) == 1 and image_files.is_folder(patterns[0]):
        return "folder", [patterns[0]]
    files = storage.expand_patterns(patterns, origin)
    first = files[0]
    head = storage.read_head(first, 256)
    if tfrecords.is_tfrecord(head[:12]) or not head or first.lower().endswith(_RECORD_SUFFIXES):
        return "records", files
    if first.lower().endswith(image_files.IMAGE_SUFFIXES):
        raise TrainerError(f"{origin}: {first} is an image; give a folder with one subfolder per "
                           "class (ROOT/CLASS/image.jpg) or a JSONL/CSV manifest that labels it")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut at the end of the head
            return "records", files
    return "manifest", files


def _label_file(files: list[str], given: str | None, num_classes: int | None,
                origin: str) -> _Classes:
    """Class names for integer-labelled records: --label-map, else labels.txt beside them."""
    path, source = given, "--label-map"
    if path is None:
        beside = storage.join(storage.dirname(files[0]), labels.FILE_NAME)
        path, source = (beside, f"{origin} ({labels.FILE_NAME} beside the records)") \
            if storage.exists(beside) else (None, None)
    if path is None:
        return _Classes(None, num_classes or DEFAULT_NUM_CLASSES, "--num-classes")
    names = labels.parse(image_files.read_text(path, source), path, source)
    if num_classes is not None and num_classes != len(names):
        raise TrainerError(f"{source}: {path} has {len(names)} labels; expected {num_classes} "
                           "(--num-classes), one per line")
    return _Classes(tuple(names), len(names), path)


def _named_items(kind: str, paths: list[str], flag: str, origin: str):
    if kind == "folder":
        return image_files.folder_items(paths[0], origin), "image(s) in class folders"
    return image_files.manifest_items(paths, flag, origin), f"image(s) listed by {len(paths)} " \
                                                            "manifest(s)"


def _inspect(flag: str, origin: str, patterns: tuple[str, ...], image_shape,
             classes: _Classes | None, num_classes: int | None, label_map: str | None):
    """(source, classes); `classes` None means this is the training data, which defines them."""
    kind, paths = _detect(patterns, origin)
    if kind == "records":
        if classes is None:
            classes = _label_file(paths, label_map, num_classes, origin)
        try:
            _, features = tfrecords.first_example(paths[0])
            encoded = encoded_records.is_encoded(features)
        except tfrecords.FileProblem:
            encoded = False  # the raw inspection names the problem
        module = encoded_records if encoded else raw_records
        return module.inspect(paths, origin, image_shape, classes.num_classes,
                              classes.names), classes
    items, description = _named_items(kind, paths, flag, origin)
    if classes is None:
        if label_map:
            names = labels.parse(image_files.read_text(label_map, "--label-map"), label_map,
                                 "--label-map")
            classes = _Classes(tuple(names), 0, f"--label-map {label_map}")
        else:
            classes = _Classes(tuple(labels.build(item.label for item in items)), 0, origin)
        if len(classes.names) < 2:
            raise TrainerError(f"{origin}: the training data has {len(classes.names)} class "
                               f"({', '.join(classes.names)}); expected at least 2")
        classes = _Classes(classes.names, labels.check_num_classes(
            num_classes, list(classes.names), classes.origin), classes.origin)
    elif classes.names is None:
        raise TrainerError(f"{origin}: labels are class names, but the training data has "
                           "integer labels and no label map; give --label-map")
    indices = labels.indices(((item.label, item.where) for item in items), list(classes.names),
                             origin, classes.origin)
    image_files.check_first_exist(items, origin)
    source = image_files.make(origin, paths, description, items, indices, image_shape,
                              classes.num_classes, classes.names)
    return source, classes


def inspect_input(patterns: tuple[str, ...], flag: str, image_shape, num_classes: int | None,
                  class_names=None, label_map: str | None = None) -> InputSource:
    """One flag's source, checked up front; `class_names` given, its labels must be among them."""
    classes = None if class_names is None else _Classes(
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


def describe(source: InputSource) -> str:
    return f"{source.size:,} {source.description} from {source.flag}"


def save_label_map(class_names, checkpoint_dir: str) -> None:
    """labels.txt beside the checkpoints; one already there must agree (a resumed run)."""
    path = storage.join(checkpoint_dir, labels.FILE_NAME)
    if storage.exists(path):
        saved = labels.parse(image_files.read_text(path, "checkpoints"), path, "checkpoints")
        labels.check_resume(saved, list(class_names), path)
        return
    storage.write_text(path, labels.text_of(list(class_names)))
