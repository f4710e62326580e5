"""Every TFRecord file is proven readable before TensorFlow's reader is handed it.

TensorFlow's reader trusts a record's declared length (a forged 2^40 with a valid checksum
crashes the process) and takes a GZIP stream cut short, or a plain file cut inside a record
header, for the end of the data, so a damaged copy silently shrinks a run. `verify` walks each
file with `trainer.records` (both checksums, the length limit, the GZIP trailer, an exact end)
and remembers what it proved, with the record counts, in `.tfrecords-verified.json` beside the
files, by size and modification time: later runs, other commands and tuning trials on the same
data only compare those. Where that file cannot be written the process keeps what it proved, and
the next process verifies again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from trainer import records, storage
from trainer.errors import TrainerError, short_reason

log = logging.getLogger(__name__)

CACHE_NAME = ".tfrecords-verified.json"
_VERSION = 1
_THREADS = 16  # latency-bound on GCS; the walk itself mostly runs in zlib and crc32c
_proved: dict[tuple, records.Framing] = {}  # this process's, for unwritable locations
_lock = threading.Lock()


class BadFile(TrainerError):
    """A file TensorFlow's reader must not be handed; the message names it and the byte."""


def forget() -> None:
    """Drops what this process proved (so that it checks as a new process would)."""
    with _lock:
        _proved.clear()


def is_cache(path: str) -> bool:
    return os.path.basename(path.rstrip("/")).startswith(CACHE_NAME)


def verify(files, compressions, origin: str, *, remember: bool = True) -> list[records.Framing]:
    """The framing of each file, walked now or remembered from an earlier walk of the same
    version; raises BadFile for the first file (in order) that is damaged."""
    with ThreadPoolExecutor(min(_THREADS, len(files))) as pool:
        versions = [(path, compression, *found) for (path, compression), found in zip(
            zip(files, compressions), pool.map(lambda path: _version(path, origin), files))]
    caches = {folder: _load(folder) for folder in {storage.dirname(f) for f in files}} \
        if remember else {}
    known = {version: _remembered(version, caches) for version in versions} if remember else {}
    todo = [version for version in versions if known.get(version) is None]
    if todo:
        started = time.monotonic()
        with ThreadPoolExecutor(min(_THREADS, len(todo))) as pool:
            walked = list(pool.map(lambda version: _walk(version, origin), todo))
        known.update(zip(todo, walked))
        log.info("verified %d TFRecord file(s), %.1f MB, in %.1f s", len(todo),
                 sum(version[2] for version in todo) / 1e6, time.monotonic() - started)
        if remember:
            _save(todo, walked, caches)
    return [known[version] for version in versions]


def _version(path: str, origin: str) -> tuple[int, str]:
    """(size, what changes whenever the content does): a local file's modification and change
    times in nanoseconds (TensorFlow's stat keeps whole seconds), an object's update time."""
    try:
        if storage.is_url(path):
            info = tf.io.gfile.stat(path)
            return info.length, str(info.mtime_nsec)
        info = os.stat(path)
        return info.st_size, f"{info.st_mtime_ns}:{info.st_ctime_ns}"
    except OSError as err:
        raise TrainerError(f"{origin}: cannot read {path} ({err.strerror or err})") from None
    except tf.errors.OpError as err:
        raise TrainerError(f"{origin}: cannot read {path} ({storage.problem(err, path)})") \
            from None


def _walk(version, origin: str) -> records.Framing:
    path, compression = version[:2]
    try:
        with storage.open_binary(path) as raw:
            framing = records.verify(raw, compression)
    except records.RecordFormatError as err:
        raise BadFile(f"{origin}: {path} is corrupt or truncated ({err})") from None
    except tf.errors.OpError as err:
        raise TrainerError(f"{origin}: cannot read {path} ({storage.problem(err, path)})") \
            from None
    with _lock:
        _proved[version] = framing
    return framing


def _remembered(version, caches) -> records.Framing | None:
    path, compression, size, changed = version
    with _lock:
        if version in _proved:
            return _proved[version]
    entry = caches[storage.dirname(path)].get(os.path.basename(path))
    if not isinstance(entry, dict) or [entry.get(k) for k in (
            "size", "changed", "compression")] != [size, changed, compression]:
        return None
    count, largest = entry.get("records"), entry.get("largest")
    if not (isinstance(count, int) and isinstance(largest, int)
            and 0 <= largest <= records.MAX_RECORD_BYTES):
        return None
    return records.Framing(count, largest)


def _cache_path(folder: str) -> str:
    return storage.join(folder, CACHE_NAME)


def _load(folder: str) -> dict:
    try:
        with tf.io.gfile.GFile(_cache_path(folder), "rb") as f:
            content = json.loads(f.read())
    except (tf.errors.OpError, ValueError):  # none yet, unreadable or not JSON: walk again
        return {}
    if not isinstance(content, dict) or content.get("version") != _VERSION:
        return {}
    files = content.get("files")
    return files if isinstance(files, dict) else {}


def _save(todo, walked, caches) -> None:
    changed: dict[str, dict] = {}
    for (path, compression, size, stamp), framing in zip(todo, walked):
        folder = storage.dirname(path)
        entries = changed.setdefault(folder, dict(caches[folder]))
        entries[os.path.basename(path)] = {
            "size": size, "changed": stamp, "compression": compression,
            "records": framing.records, "largest": framing.largest}
    for folder, entries in changed.items():
        target = _cache_path(folder)
        temporary = f"{target}.tmp-{os.getpid()}-{time.time_ns()}"
        try:
            with tf.io.gfile.GFile(temporary, "w") as f:
                f.write(json.dumps({"version": _VERSION, "files": entries}, indent=0,
                                   sort_keys=True))
            tf.io.gfile.rename(temporary, target, overwrite=True)
        except tf.errors.OpError as err:
            log.info("could not remember the verified files in %s (%s); the next run verifies "
                     "them again", target, short_reason(err))
            _remove_quietly(temporary)


def _remove_quietly(path: str) -> None:
    try:
        tf.io.gfile.remove(path)
    except tf.errors.OpError:
        pass  # never written
