"""Where a converter puts its dataset: every file is written into a staging folder, and only when
all of them are complete are they moved into the output folder (or uploaded to gs://) together.

So a conversion that fails or is killed part-way leaves no file that a `train-*` glob matches:
a local output keeps at most the hidden staging folder `.incomplete/` (removed at once after an
error, and by the next run into that folder after a kill); a gs:// output is staged in a local
temporary folder and nothing is uploaded. Shards of an earlier conversion into the same folder
that the new set does not replace (`train-00007-of-00008.tfrecord` when this run writes 4 train
shards, or `.tfrecord.gz` ones when it writes `.tfrecord`) would be read beside the new ones, so
they are removed once the new set is in place, and the summary names them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator

from trainer.cli import UsageError
from trainer.errors import TrainerError, short_reason
from trainer.tools.progress import Progress

STAGING = ".incomplete"
_SHARD = re.compile(r"(train|eval|test)-\d{5}-of-\d{5}\.tfrecord(\.gz)?")


def is_remote(output_dir: str) -> bool:
    return output_dir.startswith("gs://")


def check(output_dir: str) -> None:
    """Before any work: the output is a local folder or a gs:// folder this machine can upload
    to (google-cloud-storage installed, credentials, an existing bucket)."""
    if is_remote(output_dir):
        from trainer.tools import gcs_upload

        gcs_upload.bucket(output_dir, "--output-dir")
    elif "://" in output_dir:
        raise UsageError(f"--output-dir: {output_dir} is neither a local folder nor "
                           "gs://bucket/path")


@contextlib.contextmanager
def staging(output_dir: str) -> Iterator[str]:
    """A local folder to write the dataset into, removed when the block ends."""
    if is_remote(output_dir):
        with tempfile.TemporaryDirectory(prefix="vertex-trainer-prepare-") as folder:
            yield folder
        return
    folder = os.path.join(output_dir, STAGING)
    try:
        # What a killed run left behind: never part of a dataset, so it goes first.
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    except OSError as err:
        raise TrainerError(f"--output-dir: cannot write in {output_dir} "
                           f"({err.strerror or err})") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shard_name(split: str, shard: int, num_shards: int, suffix: str = ".tfrecord") -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}{suffix}"


def write_shards(records: Iterable[bytes], count: int, directory: str, split: str,
                 num_shards: int, suffix: str = ".tfrecord", compression: str = "",
                 progress: bool = True, unit: str = "records") -> list[str]:
    """Writes `count` records, in order, into contiguous shards whose sizes differ by at most
    one (never more shards than records: an empty file is not a dataset); returns their paths."""
    import tensorflow as tf

    num_shards = max(1, min(num_shards, count))
    options = tf.io.TFRecordOptions(compression_type=compression)
    tf.io.gfile.makedirs(directory)
    records = iter(records)
    paths = []
    with Progress(split, count, unit, progress) as bar:
        for shard in range(num_shards):
            path = os.path.join(directory, shard_name(split, shard, num_shards, suffix))
            size = count * (shard + 1) // num_shards - count * shard // num_shards
            try:
                with tf.io.TFRecordWriter(path, options) as writer:
                    for record in itertools.islice(records, size):
                        writer.write(record)
                        bar.update()
            except tf.errors.OpError as err:
                raise TrainerError(f"cannot write {path} ({short_reason(err)})") from None
            paths.append(path)
    return paths


@dataclass(frozen=True)
class Published:
    unchanged: list[str]  # names already in the gs:// folder with the same bytes, not sent
    removed: list[str]  # shards of an earlier conversion

    def lines(self) -> list[str]:
        if not self.removed:
            return []
        shown = ", ".join(self.removed[:3]) + (", ..." if len(self.removed) > 3 else "")
        return [f"removed {len(self.removed)} shard(s) of an earlier conversion ({shown})"]


def stale(existing: Iterable[str], new: Iterable[str]) -> list[str]:
    """The shards among `existing` names that the new set does not replace."""
    keep = set(new)
    return sorted(name for name in existing if _SHARD.fullmatch(name) and name not in keep)


def publish(staged: str, names: list[str], output_dir: str, progress: bool = True) -> Published:
    """Moves (or uploads) the complete files `names` of the staging folder into `output_dir`,
    then removes the shards of an earlier conversion there."""
    if is_remote(output_dir):
        from trainer.tools import gcs_upload

        _, unchanged = gcs_upload.upload([os.path.join(staged, n) for n in names], output_dir,
                                         progress=progress)
        removed = stale(gcs_upload.list_names(output_dir), names)
        gcs_upload.delete(removed, output_dir)
        return Published(unchanged, removed)
    try:
        for name in names:
            os.replace(os.path.join(staged, name), os.path.join(output_dir, name))
        removed = stale(os.listdir(output_dir), names)
        for name in removed:
            os.remove(os.path.join(output_dir, name))
    except OSError as err:
        raise TrainerError(f"--output-dir: cannot move the new files into {output_dir} "
                           f"({err.strerror or err})") from None
    return Published([], removed)
