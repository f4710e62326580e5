"""TFRecord files, whatever their records hold: up-front checks of each file and record streams.

`inspect_files` checks every matched file in parallel (non-empty, TFRecord framing, compression,
a first record that is a tf.train.Example) and hands its features to the source's own check.
`record_units` streams the records for one input pipeline: its shard of the files (or of the
records, when there are fewer files than pipelines), interleaved, shuffled and repeated for
training.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import tensorflow as tf

from trainer import records, storage
from trainer.errors import TrainerError, short_reason

_INSPECT_THREADS = 16  # file checks are latency-bound on GCS
_MAX_CYCLE = 16

T = TypeVar("T")


class FileProblem(TrainerError):
    """A problem with one file, raised by a check with just the problem; named by the caller."""


def is_tfrecord(head: bytes) -> bool:
    try:
        return len(head) == 12 and records.compression_of(head) is not None
    except records.RecordFormatError:
        return False


def first_example(path: str):
    """(compression, the first record's feature map); raises FileProblem."""
    try:
        head = storage.read_head(path, 12)
        if not head:
            raise FileProblem("file is empty; expected TFRecord data")
        compression = records.compression_of(head) if len(head) == 12 else None
        if compression is None:
            raise FileProblem(f"truncated TFRecord file ({len(head)} bytes)")
        with storage.open_binary(path) as raw:
            payload = records.read_first_record(raw, compression)
    except records.RecordFormatError as err:
        raise FileProblem(str(err)) from None
    except tf.errors.OpError as err:
        raise FileProblem(f"cannot read ({short_reason(err)})") from None
    if payload is None:
        raise FileProblem("file holds no records")
    try:
        features = tf.train.Example.FromString(payload).features.feature
    except Exception:  # protobuf's DecodeError is not importable across protobuf versions
        raise FileProblem("first record is not a serialized tf.train.Example") from None
    if not features:
        raise FileProblem("first record is not a tf.train.Example with features")
    return compression, features


def inspect_files(files: list[str], flag: str,
                  check: Callable[[str, str, object], T]) -> list[T]:
    """check(path, compression, features) of every file's first record, in parallel."""
    def inspect(path):
        try:
            return check(path, *first_example(path))
        except FileProblem as err:
            raise TrainerError(f"{flag}: {path}: {err}") from None

    with ThreadPoolExecutor(min(_INSPECT_THREADS, len(files))) as pool:
        return list(pool.map(inspect, files))


def record_units(files: tuple[str, ...], compressions: tuple[str, ...], *, training: bool,
                 shuffle_buffer: int, seed: int | None, input_context, with_position: bool):
    """Serialized records for this input pipeline (with "FILE record N" when `with_position`)."""
    stream = tf.data.Dataset.from_tensor_slices((list(files), list(compressions)))
    num_files = len(files)
    shard_records = False
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    if pipelines > 1:
        if num_files >= pipelines:
            stream = stream.shard(pipelines, input_context.input_pipeline_id)
            num_files = len(range(input_context.input_pipeline_id, len(files), pipelines))
        else:
            shard_records = True
    if training:
        stream = stream.shuffle(num_files, seed=seed, reshuffle_each_iteration=True).repeat()

    def read(path, compression):
        dataset = tf.data.TFRecordDataset(path, compression)
        if not with_position:
            return dataset
        return dataset.enumerate().map(
            lambda index, record: (record, tf.strings.join([path, " record ",
                                                            tf.strings.as_string(index)])))

    dataset = stream.interleave(read, cycle_length=min(num_files, _MAX_CYCLE),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if shard_records:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset


def find_corrupt_file(source) -> tuple[str, str] | None:
    """(path, reason) of the first file that cannot be read to its end (a slow, cold path)."""
    for path, compression in zip(source.files, source.compressions):
        try:
            for _ in tf.data.TFRecordDataset(path, compression):
                pass
        except tf.errors.OpError as err:
            return path, short_reason(err)
    return None
