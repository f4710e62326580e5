"""Input pipeline: inspect the TFRecord files once, then stream them through tf.data.

`inspect_input` checks every matched file up front (non-empty, TFRecord framing, compression,
schema and shape of its first record) so that bad inputs fail with the file's name before any
output is written. `make_dataset` builds the streaming pipeline as a `dataset_fn` body for
`strategy.distribute_datasets_from_function`: shard per input pipeline, interleave files,
shuffle (training), batch, then parse the whole batch with one vectorized `parse_example`.
Problems that only show deeper in a file surface as op errors while training;
`explain_pipeline_error` turns those into one-line messages.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from trainer import records, storage
from trainer.errors import TrainerError, short_reason

_INSPECT_THREADS = 16  # file checks are latency-bound on GCS
_MAX_CYCLE = 16


@dataclass(frozen=True)
class InputSource:
    """Inspected input files and how to decode them."""

    flag: str
    files: tuple[str, ...]
    compressions: tuple[str, ...]
    image_key: str
    image_dtype: str  # "uint8" or "float32"
    has_shape_fields: bool
    image_shape: tuple[int, int, int]
    num_classes: int


@dataclass(frozen=True)
class _FileFormat:
    compression: str
    image_key: str
    image_dtype: str
    has_shape_fields: bool


def inspect_input(patterns: tuple[str, ...], flag: str, image_shape: tuple[int, int, int],
                  num_classes: int) -> InputSource:
    files = storage.expand_patterns(patterns, flag)

    def inspect(path):
        return _inspect_file(path, flag, image_shape, num_classes)

    with ThreadPoolExecutor(min(_INSPECT_THREADS, len(files))) as pool:
        formats = list(pool.map(inspect, files))
    first = formats[0]
    for path, fmt in zip(files, formats):
        if (fmt.image_key, fmt.image_dtype) != (first.image_key, first.image_dtype):
            raise TrainerError(
                f"{flag}: {path} stores images as {fmt.image_key!r} ({fmt.image_dtype}) but "
                f"{files[0]} as {first.image_key!r} ({first.image_dtype}); use one schema")
    return InputSource(flag, tuple(files), tuple(f.compression for f in formats), first.image_key,
                       first.image_dtype, any(f.has_shape_fields for f in formats), image_shape,
                       num_classes)


def _inspect_file(path: str, flag: str, image_shape, num_classes) -> _FileFormat:
    def fail(problem: str):
        return TrainerError(f"{flag}: {path}: {problem}")

    try:
        head = storage.read_head(path, 12)
        if not head:
            raise fail("file is empty; expected TFRecord data")
        compression = records.compression_of(head) if len(head) == 12 else None
        if compression is None:
            raise fail(f"truncated TFRecord file ({len(head)} bytes)")
        with storage.open_binary(path) as raw:
            payload = records.read_first_record(raw, compression)
    except records.RecordFormatError as err:
        raise fail(str(err)) from None
    except tf.errors.OpError as err:
        raise fail(f"cannot read ({short_reason(err)})") from None
    if payload is None:
        raise fail("file holds no records")
    try:
        features = tf.train.Example.FromString(payload).features.feature
    except Exception:  # protobuf's DecodeError is not importable across protobuf versions
        raise fail("first record is not a serialized tf.train.Example") from None
    if not features:
        raise fail("first record is not a tf.train.Example with features")

    image_key = records.IMAGE if records.IMAGE in features else records.LEGACY_IMAGE
    if image_key not in features:
        raise fail(f"records lack the image feature; expected {records.IMAGE!r} (uint8 bytes) or "
                   f"{records.LEGACY_IMAGE!r} (float32 bytes); found {sorted(features)}")
    if records.LABEL not in features:
        raise fail(f"records lack the {records.LABEL!r} feature (int64); found {sorted(features)}")
    image = features[image_key].bytes_list.value
    label = features[records.LABEL].int64_list.value
    if len(image) != 1:
        raise fail(f"feature {image_key!r} must hold one bytes value")
    if len(label) != 1:
        raise fail(f"feature {records.LABEL!r} must hold one int64 value")

    pixels = int(np.prod(image_shape))
    size = len(image[0])
    if size == pixels:
        dtype = "uint8"
    elif image_key == records.LEGACY_IMAGE and size == 4 * pixels:
        dtype = "float32"
    else:
        expected = str(pixels) if image_key == records.IMAGE else \
            f"{pixels} (uint8) or {4 * pixels} (float32)"
        raise fail(f"image has {size} bytes; expected {expected} for "
                   f"{_shape_text(image_shape)} (--image-height/--image-width/--image-channels)")
    declared = tuple(features[k].int64_list.value[0] for k in records.SHAPE_KEYS
                     if k in features and features[k].int64_list.value)
    if len(declared) == 3 and declared != tuple(image_shape):
        raise fail(f"records declare images of {_shape_text(declared)}; the flags say "
                   f"{_shape_text(image_shape)} (--image-height/--image-width/--image-channels)")
    if not 0 <= label[0] < num_classes:
        raise fail(f"label {label[0]} is outside [0, {num_classes}) (--num-classes)")
    return _FileFormat(compression, image_key, dtype, len(declared) == 3)


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _assert(condition, message: str, *data):
    # The message is recovered from the op error by explain_pipeline_error.
    return tf.debugging.Assert(condition, [f"[[{message}]]", *data], summarize=5)


def _parse_fn(source: InputSource):
    height, width, channels = source.image_shape
    dtype = tf.uint8 if source.image_dtype == "uint8" else tf.float32
    num_bytes = height * width * channels * dtype.size
    spec = {source.image_key: tf.io.FixedLenFeature([], tf.string),
            records.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    if source.has_shape_fields:
        # Records without the fields default to the expected shape, so only wrong ones fail.
        for key, dim in zip(records.SHAPE_KEYS, source.image_shape):
            spec[key] = tf.io.FixedLenFeature([], tf.int64, default_value=dim)
    flag, shape = source.flag, _shape_text(source.image_shape)

    def parse(serialized):
        features = tf.io.parse_example(serialized, spec)
        images, labels = features[source.image_key], features[records.LABEL]
        sizes = tf.strings.length(images)
        label_ok = (labels >= 0) & (labels < source.num_classes)
        checks = [
            _assert(tf.reduce_all(sizes == num_bytes),
                    f"{flag}: a record holds an image of the wrong size; expected {num_bytes} "
                    f"bytes for {shape} {source.image_dtype} (--image-height/--image-width/"
                    f"--image-channels), found", tf.boolean_mask(sizes, sizes != num_bytes)),
            _assert(tf.reduce_all(label_ok),
                    f"{flag}: a record holds a label outside [0, {source.num_classes}) "
                    f"(--num-classes):", tf.boolean_mask(labels, ~label_ok)),
        ]
        if source.has_shape_fields:
            declared = tf.stack([features[k] for k in records.SHAPE_KEYS], axis=1)
            checks.append(_assert(tf.reduce_all(declared == source.image_shape),
                                  f"{flag}: a record declares a shape other than {shape} "
                                  f"(--image-height/--image-width/--image-channels)"))
        with tf.control_dependencies(checks):
            images = tf.io.decode_raw(images, dtype)
        images = tf.reshape(images, [-1, height, width, channels])
        if dtype == tf.uint8:
            images = tf.cast(images, tf.float32) * (1.0 / 255.0)
        return images, tf.cast(labels, tf.int32)

    return parse


def make_dataset(source: InputSource, *, batch_size: int, training: bool,
                 shuffle_buffer: int = 0, num_batches: int | None = None, seed: int | None = None,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1] shaped [B, H, W, C], int32 labels).

    `batch_size` is global; with an `input_context` each pipeline gets its replicas' share and
    its own shard of the files (or of the records, when there are fewer files than pipelines).
    Training data is shuffled and repeated forever; evaluation data is read once, in a deterministic order.
    """
    files = tf.data.Dataset.from_tensor_slices((list(source.files), list(source.compressions)))
    num_files = len(source.files)
    shard_records = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        if num_files >= input_context.num_input_pipelines:
            files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            num_files = len(range(input_context.input_pipeline_id, len(source.files),
                                  input_context.num_input_pipelines))
        else:
            shard_records = True
    if training:
        files = files.shuffle(num_files, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = files.interleave(
        lambda path, compression: tf.data.TFRecordDataset(path, compression),
        cycle_length=min(num_files, _MAX_CYCLE), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training)
    if shard_records:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    if num_batches is not None:
        dataset = dataset.take(num_batches)
    dataset = dataset.map(_parse_fn(source), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=not training)
    options = tf.data.Options()
    # Destroying an iterator while the autotune model's optimizer thread sleeps blocks for up to
    # 60 s (seen here: 6-30 s between the last evaluation and the export). With the model off,
    # AUTOTUNE parallelism resolves to the core count, and this pipeline measured as fast or
    # faster (154k vs 141k records/s), far above what training consumes.
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


_MISSING_FEATURE = re.compile(r"Feature: (\w+) \(data type: (\w+)\) is required")
_WRONG_TYPE = re.compile(r"Key: (\w+)\b.*?Data types don't match\. Data type: (\w+) but expected "
                         r"type: (\w+)")


def explain_pipeline_error(err: Exception, source: InputSource) -> TrainerError | None:
    """A one-line TrainerError for a data problem met while reading `source`, else None."""
    flag = source.flag
    if isinstance(err, UnicodeDecodeError):
        # TensorFlow quotes the undecodable record in its error text and fails to decode that.
        return TrainerError(f"{flag}: a record is not a serialized tf.train.Example")
    if isinstance(err, tf.errors.DataLossError):
        culprit = find_corrupt_file(source)
        where = f"{culprit[0]} is corrupt or truncated ({culprit[1]})" if culprit else \
            f"a file is corrupt or truncated ({short_reason(err)})"
        return TrainerError(f"{flag}: {where}")
    if not isinstance(err, tf.errors.InvalidArgumentError):
        return None
    message = err.message or ""
    found = re.search(r"assertion failed: \[\[\[(.*?)\]\]\](.*)", message, re.S)
    if found:
        seen = " ".join(found.group(2).split("\n")[0].split())
        return TrainerError(f"{found.group(1)} {seen}".strip())
    found = _MISSING_FEATURE.search(message)
    if found:
        return TrainerError(f"{flag}: a record lacks the {found.group(1)!r} feature "
                            f"({found.group(2)}); every record needs an image and a label")
    found = _WRONG_TYPE.search(message)
    if found:
        return TrainerError(f"{flag}: feature {found.group(1)!r} of a record holds {found.group(2)}"
                            f"; expected {found.group(3)}")
    if "parse" in message.lower() and "example" in message.lower():
        return TrainerError(f"{flag}: a record is not a serialized tf.train.Example")
    return None


def find_corrupt_file(source: InputSource) -> tuple[str, str] | None:
    """(path, reason) of the first file that cannot be read to its end (a slow, cold path)."""
    for path, compression in zip(source.files, source.compressions):
        try:
            for _ in tf.data.TFRecordDataset(path, compression):
                pass
        except tf.errors.OpError as err:
            return path, short_reason(err)
    return None
