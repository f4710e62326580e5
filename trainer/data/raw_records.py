"""Source: TFRecords of raw pixels (the trainer's own schema, or the classic tutorials' one).

Fixed-size images let a whole batch parse in one vectorized `parse_example` (about 4x faster
than a record at a time), so this source parses batches, not records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from trainer import records
from trainer.data import tfrecords
from trainer.data.source import Detector, Inspected, Probe, Request
from trainer.data.tfrecords import FileProblem, RecordFiles, assert_that
from trainer.errors import TrainerError


@dataclass(frozen=True, kw_only=True)
class RawRecords(RecordFiles):
    """Inspected TFRecord files of raw pixels and how to decode them."""

    image_key: str
    image_dtype: str  # "uint8" or "float32"
    has_shape_fields: bool
    parses_batches = True

    def parse_batch(self, serialized):
        return _parse_fn(self)(serialized)


@dataclass(frozen=True)
class _FileFormat:
    image_key: str
    image_dtype: str
    has_shape_fields: bool


def inspect(probe: Probe, request: Request) -> RawRecords:
    files = probe.files
    classes = tfrecords.record_classes(request, files)
    formats, fields = tfrecords.inspect_files(
        files, request.origin, lambda path, compression, features: _check_first_record(
            features, request, classes.num_classes))
    first = formats[0]
    for path, fmt in zip(files, formats):
        if (fmt.image_key, fmt.image_dtype) != (first.image_key, first.image_dtype):
            raise TrainerError(
                f"{request.origin}: {path} stores images as {fmt.image_key!r} ({fmt.image_dtype}) "
                f"but {files[0]} as {first.image_key!r} ({first.image_dtype}); use one schema")
    return RawRecords(
        **Inspected.of(request, classes), **fields,
        description=f"records in {len(files)} raw-pixel TFRecord file(s)",
        image_key=first.image_key, image_dtype=first.image_dtype,
        has_shape_fields=any(f.has_shape_fields for f in formats))


# Anything that is not text or an image is read as TFRecords, so that the error says what a
# TFRecord file must be.
DETECTOR = Detector("raw-pixel TFRecords",
                    lambda probe: tfrecords.looks_like_records(probe) or not probe.text, inspect)


def _check_first_record(features, request: Request, num_classes: int) -> _FileFormat:
    image_shape, terms = request.image_shape, request.terms
    image_key = records.IMAGE if records.IMAGE in features else records.LEGACY_IMAGE
    if image_key not in features:
        raise FileProblem(f"records lack the image feature; expected {records.IMAGE!r} (uint8 "
                          f"bytes), {records.LEGACY_IMAGE!r} (float32 bytes) or image/encoded "
                          f"(JPEG/PNG); found {sorted(features)}")
    if records.LABEL not in features:
        raise FileProblem(f"records lack the {records.LABEL!r} feature (int64); found "
                          f"{sorted(features)}")
    image = features[image_key].bytes_list.value
    label = features[records.LABEL].int64_list.value
    if len(image) != 1:
        raise FileProblem(f"feature {image_key!r} must hold one bytes value")
    if len(label) != 1:
        raise FileProblem(f"feature {records.LABEL!r} must hold one int64 value")

    pixels = int(np.prod(image_shape))
    size = len(image[0])
    if size == pixels:
        dtype = "uint8"
    elif image_key == records.LEGACY_IMAGE and size == 4 * pixels:
        dtype = "float32"
    else:
        expected = str(pixels) if image_key == records.IMAGE else \
            f"{pixels} (uint8) or {4 * pixels} (float32)"
        raise FileProblem(f"image has {size} bytes; expected {expected} for "
                          f"{shape_text(image_shape)} ({terms.image_shape})")
    declared = tuple(features[k].int64_list.value[0] for k in records.SHAPE_KEYS
                     if k in features and features[k].int64_list.value)
    if len(declared) == 3 and declared != tuple(image_shape):
        raise FileProblem(f"records declare images of {shape_text(declared)}; expected "
                          f"{shape_text(image_shape)} ({terms.image_shape})")
    tfrecords.check_label(label[0], num_classes, terms)
    return _FileFormat(image_key, dtype, len(declared) == 3)


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _parse_fn(source: RawRecords):
    height, width, channels = source.image_shape
    dtype = tf.uint8 if source.image_dtype == "uint8" else tf.float32
    num_bytes = height * width * channels * dtype.size
    spec = {source.image_key: tf.io.FixedLenFeature([], tf.string),
            records.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    if source.has_shape_fields:
        # Records without the fields default to the expected shape, so only wrong ones fail.
        for key, dim in zip(records.SHAPE_KEYS, source.image_shape):
            spec[key] = tf.io.FixedLenFeature([], tf.int64, default_value=dim)
    flag, shape, terms = source.flag, shape_text(source.image_shape), source.terms

    def parse(serialized):
        features = tf.io.parse_example(serialized, spec)
        images, labels = features[source.image_key], features[records.LABEL]
        sizes = tf.strings.length(images)
        label_ok = (labels >= 0) & (labels < source.num_classes)
        checks = [
            assert_that(tf.reduce_all(sizes == num_bytes),
                        f"{flag}: a record holds an image of the wrong size; expected "
                        f"{num_bytes} bytes for {shape} {source.image_dtype} "
                        f"({terms.image_shape}), found",
                        tf.boolean_mask(sizes, sizes != num_bytes)),
            assert_that(tf.reduce_all(label_ok),
                        f"{flag}: a record holds a label outside [0, {source.num_classes}) "
                        f"({terms.num_classes}):", tf.boolean_mask(labels, ~label_ok)),
        ]
        if source.has_shape_fields:
            declared = tf.stack([features[k] for k in records.SHAPE_KEYS], axis=1)
            checks.append(assert_that(tf.reduce_all(declared == source.image_shape),
                                      f"{flag}: a record declares a shape other than {shape} "
                                      f"({terms.image_shape})"))
        with tf.control_dependencies(checks):
            images = tf.io.decode_raw(images, dtype)
        images = tf.reshape(images, [-1, height, width, channels])
        if dtype == tf.uint8:
            images = tf.cast(images, tf.float32) * (1.0 / 255.0)
        return images, tf.cast(labels, tf.int32)

    return parse
