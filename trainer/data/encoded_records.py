"""Source: TFRecords of encoded images, in the common convention (TF-slim, TFDS, our converter).

    image/encoded      bytes  JPEG, PNG, GIF or BMP
    image/class/label  int64  in [0, --num-classes)
    image/format, image/class/text, image/height, image/width   optional, not needed

Records parse one at a time (images differ in size) to (encoded bytes, label, "FILE record N"),
which the pipeline decodes. Class names come from --label-map or a labels.txt beside the files.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from trainer.data import tfrecords
from trainer.data.raw_records import assert_that
from trainer.data.tfrecords import FileProblem

ENCODED = "image/encoded"
LABEL = "image/class/label"
TEXT = "image/class/text"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"


@dataclass(frozen=True)
class EncodedRecords:
    flag: str
    files: tuple[str, ...]
    compressions: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None = None
    parses_batches = False
    description = "encoded-image TFRecord file(s)"

    @property
    def size(self) -> int:
        return len(self.files)

    def units(self, **kwargs):
        return tfrecords.record_units(self.files, self.compressions, with_position=True,
                                      **kwargs)

    def parse_one(self, serialized, where):
        spec = {ENCODED: tf.io.FixedLenFeature([], tf.string),
                LABEL: tf.io.FixedLenFeature([], tf.int64)}
        features = tf.io.parse_single_example(serialized, spec)
        label = features[LABEL]
        check = assert_that((label >= 0) & (label < self.num_classes),
                            f"{self.flag}: a record holds a label outside "
                            f"[0, {self.num_classes}) (--num-classes):", label, where)
        with tf.control_dependencies([check]):
            return tf.identity(features[ENCODED]), tf.cast(label, tf.int32), where


def is_encoded(features) -> bool:
    return ENCODED in features


def inspect(files: list[str], flag: str, image_shape, num_classes: int,
            class_names=None) -> EncodedRecords:
    def check(path, compression, features):
        if LABEL not in features:
            raise FileProblem(f"records lack the {LABEL!r} feature (int64); found "
                              f"{sorted(features)}")
        encoded = features[ENCODED].bytes_list.value
        label = features[LABEL].int64_list.value
        if len(encoded) != 1 or not encoded[0]:
            raise FileProblem(f"feature {ENCODED!r} must hold one non-empty bytes value")
        if len(label) != 1:
            raise FileProblem(f"feature {LABEL!r} must hold one int64 value")
        if not 0 <= label[0] < num_classes:
            raise FileProblem(f"label {label[0]} is outside [0, {num_classes}) (--num-classes)")
        return compression

    compressions = tfrecords.inspect_files(files, flag, check)
    return EncodedRecords(flag, tuple(files), tuple(compressions), tuple(image_shape),
                          num_classes, tuple(class_names) if class_names else None)
