"""TFRecord files, whatever their records hold: what record sources share.

`inspect_files` checks every matched file in parallel (non-empty, TFRecord framing, compression,
a first record that is a tf.train.Example handed to the kind's own check) and then proves each
whole file readable (`record_guard`), which also counts its records. `RecordFiles` is the part
of the `Source` protocol every record kind shares: the files, their sizes, the units (each input
pipeline's shard of the files, or of the records when there are fewer files than pipelines,
interleaved, shuffled and repeated for training), the names of the examples, and the errors
only records have.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import tensorflow as tf

from trainer import records, storage
from trainer.data import labels, record_guard
from trainer.data.source import RECORD_SUFFIXES, Classes, Inspected, Probe, Request, Terms
from trainer.data.source import fingerprint as source_fingerprint
from trainer.errors import TrainerError, short_reason

DEFAULT_NUM_CLASSES = 10  # MNIST's, the bundled sample's

_INSPECT_THREADS = 16  # file checks are latency-bound on GCS
_MAX_CYCLE = 16
_MISSING_FEATURE = re.compile(r"Feature: (\S+) \(data type: (\w+)\) is required")
_WRONG_TYPE = re.compile(r"Key: ([^\s,]+?)[.,]?\s.*?Data types don't match\. Data type: (\w+) but "
                         r"expected type: (\w+)")

T = TypeVar("T")


class FileProblem(TrainerError):
    """A problem with one file, raised by a check with just the problem; named by the caller."""


def is_tfrecord(head: bytes) -> bool:
    try:
        return len(head) >= 12 and records.compression_of(head) is not None
    except records.RecordFormatError:
        return False


def looks_like_records(probe: Probe) -> bool:
    return probe.folder is None and (not probe.head or is_tfrecord(probe.head[:12])
                                     or probe.files[0].lower().endswith(RECORD_SUFFIXES))


def record_classes(request: Request, files: list[str]) -> Classes:
    """The classes of integer-labelled records: the training data's for other data; for the
    training data --label-map, else a labels.txt beside the records, else --num-classes."""
    if request.classes is not None:
        return request.classes
    path, origin = request.label_map, "--label-map"
    if path is None:
        beside = storage.join(storage.dirname(files[0]), labels.FILE_NAME)
        if storage.exists(beside):
            path, origin = beside, f"{request.origin} ({labels.FILE_NAME} beside the records)"
    if path is None:
        return Classes(None, request.num_classes or DEFAULT_NUM_CLASSES, request.terms.num_classes)
    names = labels.read(path, origin)
    if request.num_classes is not None and request.num_classes != len(names):
        raise TrainerError(f"{origin}: {path} has {len(names)} labels; expected "
                           f"{request.num_classes} ({request.terms.num_classes}), one per line")
    return Classes(tuple(names), len(names), path)


def check_label(label: int, num_classes: int, terms: Terms) -> None:
    if not 0 <= label < num_classes:
        raise FileProblem(f"label {label} is outside [0, {num_classes}) ({terms.num_classes})")


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
                  check: Callable[[str, str, object], T]) -> tuple[list[T], dict]:
    """(check(path, compression, features) of each file's first record, the `RecordFiles`
    fields the inspection decides: files, compressions, record counts and size); every file
    proven readable to its end before it is accepted."""
    def inspect(path):
        try:
            compression, features = first_example(path)
            return check(path, compression, features), compression
        except FileProblem as err:
            raise TrainerError(f"{flag}: {path}: {err}") from None

    with ThreadPoolExecutor(min(_INSPECT_THREADS, len(files))) as pool:
        checked, compressions = zip(*pool.map(inspect, files))
    framings = record_guard.verify(files, compressions, flag)
    counts = tuple(framing.records for framing in framings)
    return list(checked), dict(files=tuple(files), compressions=tuple(compressions),
                               counts=counts, size=sum(counts))


@dataclass(frozen=True, kw_only=True)
class RecordFiles(Inspected):
    """TFRecord files, inspected and proven readable; a kind adds how its records parse."""

    compressions: tuple[str, ...]
    counts: tuple[int, ...]  # records per file
    labelled = True

    def units(self, *, training: bool, shuffle_buffer: int, seed: int | None, input_context,
              repeat: bool = True):
        """Serialized records (and "FILE record N" for a kind that parses one at a time)."""
        def read(path, compression, _):
            dataset = tf.data.TFRecordDataset(path, compression)
            if self.parses_batches:
                return dataset
            return dataset.enumerate().map(
                lambda index, record: (record, tf.strings.join([path, " record ",
                                                                tf.strings.as_string(index)])))

        return self._interleave(read, training=training, shuffle_buffer=shuffle_buffer,
                                seed=seed, input_context=input_context, repeat=repeat)

    def example_names(self):
        """"FILE#N" for each record, in evaluation order: the order `units` reads them, made
        from the record counts without reading a record."""
        def names(path, _, count):
            return tf.data.Dataset.range(tf.cast(count, tf.int64)).map(
                lambda index: tf.strings.join([path, "#", tf.strings.as_string(index)]))

        return self._interleave(names, training=False, shuffle_buffer=0, seed=None,
                                input_context=None)

    def fingerprint(self) -> str:
        return source_fingerprint((self.files, self.counts, self.compressions, self.num_classes,
                                   self.image_shape, type(self).__name__), self.files)

    def _interleave(self, read, *, training: bool, shuffle_buffer: int, seed: int | None,
                    input_context, repeat: bool = True):
        stream = tf.data.Dataset.from_tensor_slices(
            (list(self.files), list(self.compressions), list(self.counts)))
        num_files = len(self.files)
        shard_records = False
        pipelines = input_context.num_input_pipelines if input_context is not None else 1
        if pipelines > 1:
            if num_files >= pipelines:
                stream = stream.shard(pipelines, input_context.input_pipeline_id)
                num_files = len(range(input_context.input_pipeline_id, len(self.files),
                                      pipelines))
            else:
                shard_records = True
        if training:
            stream = stream.shuffle(num_files, seed=seed, reshuffle_each_iteration=True)
            if repeat:
                stream = stream.repeat()
        dataset = stream.interleave(read, cycle_length=min(num_files, _MAX_CYCLE),
                                    num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=not training)
        if shard_records:
            dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return dataset

    def explain(self, err: Exception) -> TrainerError | None:
        if isinstance(err, UnicodeDecodeError):
            # TensorFlow quotes the undecodable record in its error text and fails to decode that.
            return TrainerError(f"{self.flag}: a record is not a serialized tf.train.Example")
        if isinstance(err, tf.errors.DataLossError):
            culprit = find_corrupt_file(self)
            return culprit or TrainerError(f"{self.flag}: a file is corrupt or truncated "
                                           f"({short_reason(err)})")
        if isinstance(err, tf.errors.InvalidArgumentError):
            return explain_parse_error(err.message or "", self.flag)
        return None


def assert_that(condition, message: str, *data):
    # The message is recovered from the op error by pipeline.explain_pipeline_error.
    return tf.debugging.Assert(condition, [f"[[{message}]]", *data], summarize=5)


def find_corrupt_file(source: RecordFiles) -> TrainerError | None:
    """The error for the first file that no longer reads to its end (walked again, not from
    what was remembered: it changed, or the storage failed, after it was verified)."""
    for path, compression in zip(source.files, source.compressions):
        try:
            record_guard.verify([path], [compression], source.flag, remember=False)
        except record_guard.BadFile as err:
            return err
    return None


def explain_parse_error(message: str, flag: str) -> TrainerError | None:
    """A one-line error for parse_example's complaints about a record's features, else None."""
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
