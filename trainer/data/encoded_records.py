"""Source: TFRecords of encoded images, in the common convention (TF-slim, our converter).

    image/encoded      bytes  JPEG, PNG, GIF or BMP
    image/class/label  int64  in [0, --num-classes)
    image/format, image/class/text, image/height, image/width   optional, not needed

Records parse one at a time (images differ in size) to (encoded bytes, label, "FILE record N"),
which the pipeline decodes. Class names come from --label-map or a labels.txt beside the files.
Other layouts of the same idea (TFDS's `image` and `label`) name their keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from trainer.data import tfrecords
from trainer.data.source import Classes, Detector, Inspected, Probe, Request
from trainer.data.tfrecords import FileProblem, RecordFiles, assert_that

ENCODED = "image/encoded"
LABEL = "image/class/label"
TEXT = "image/class/text"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"


@dataclass(frozen=True, kw_only=True)
class EncodedRecords(RecordFiles):
    image_key: str = ENCODED
    label_key: str = LABEL
    parses_batches = False

    def parse_one(self, serialized, where):
        spec = {self.image_key: tf.io.FixedLenFeature([], tf.string),
                self.label_key: tf.io.FixedLenFeature([], tf.int64)}
        features = tf.io.parse_single_example(serialized, spec)
        label = features[self.label_key]
        check = assert_that((label >= 0) & (label < self.num_classes),
                            f"{self.flag}: a record holds a label outside "
                            f"[0, {self.num_classes}) ({self.terms.num_classes}):", label, where)
        with tf.control_dependencies([check]):
            return tf.identity(features[self.image_key]), tf.cast(label, tf.int32), where

    def read(self, data):
        return data

    def name_image(self, data) -> str:
        return "the image"


def inspect_records(files: list[str], request: Request, classes: Classes, *,
                    image_key: str = ENCODED, label_key: str = LABEL,
                    description: str | None = None) -> EncodedRecords:
    """Record files of encoded images under the given keys, each file's first record checked."""
    def check(path, compression, features):
        for key, kind in ((image_key, "bytes"), (label_key, "int64")):
            if key not in features:
                raise FileProblem(f"records lack the {key!r} feature ({kind}); found "
                                  f"{sorted(features)}")
        encoded = features[image_key].bytes_list.value
        label = features[label_key].int64_list.value
        if len(encoded) != 1 or not encoded[0]:
            raise FileProblem(f"feature {image_key!r} must hold one non-empty bytes value")
        if len(label) != 1:
            raise FileProblem(f"feature {label_key!r} must hold one int64 value")
        tfrecords.check_label(label[0], classes.num_classes, request.terms)

    _, fields = tfrecords.inspect_files(files, request.origin, check)
    return EncodedRecords(
        **Inspected.of(request, classes), **fields,
        image_key=image_key, label_key=label_key,
        description=description or f"records in {len(files)} encoded-image TFRecord file(s)")


def inspect(probe: Probe, request: Request) -> EncodedRecords:
    return inspect_records(probe.files, request, tfrecords.record_classes(request, probe.files))


def _holds_encoded_images(probe: Probe) -> bool:
    if not tfrecords.looks_like_records(probe):
        return False
    try:
        _, features = tfrecords.first_example(probe.files[0])
    except FileProblem:
        return False  # the raw-pixel inspection names the problem
    return ENCODED in features


DETECTOR = Detector("encoded-image TFRecords", _holds_encoded_images, inspect)
