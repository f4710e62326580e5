"""--cache memory|disk: decoded, resized images kept after their first read (no TensorFlow).

Encoded images (folders, manifests, encoded TFRecords) cost a decode and a resize every epoch;
with --cache each input pipeline keeps its shard of them, as H x W x C uint8 before any
augmentation, the first time it reads them, and later epochs (and evaluations) read that.

`plan` decides, up front, what is cached and checks that it fits: `memory` against the memory
this machine (or its container) has available, `disk` against the free space where the files go.
A disk cache goes under the job dir when that is local, else (gs://, Vertex's /gcs/ mount) in a
local temporary directory: reading it back from Cloud Storage every epoch would cost more than
the decoding it saves. Its folder is named by the source's fingerprint (inputs, labels, local
files' sizes and times, image shape), so a cache of other data or another image size is never
read; folders of data this run no longer reads are removed, and so is what a killed run left
half-written (tf.data's lock and temporary files, which would otherwise stop the next run).
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

from trainer import storage
from trainer.errors import TrainerError

CHOICES = ("memory", "disk")
# What tf.data keeps per cached image beside its pixels (two tensors, the cache's entry and the
# shuffle buffer's): measured ~750 bytes.
OVERHEAD_BYTES = 1024
# The model, its activations and the input buffers need room too.
USABLE_SHARE = 0.8
_NO_LIMIT = 1 << 60
_FOLDER = "cache"


@dataclass(frozen=True)
class Cache:
    """What a run caches: its sources (by identity) and, for `disk`, each one's folder."""

    kind: str
    entries: tuple[tuple[object, str], ...]  # (source, folder; "" for memory)
    note: str  # the log line that says what is cached, how big, and where

    def covers(self, source) -> bool:
        return any(source is cached for cached, _ in self.entries)

    def target(self, source, input_context) -> str:
        """tf.data's cache argument for this pipeline's shard: "" (memory) or a file prefix
        (disk), cleared of what a killed run left half-written."""
        folder = next(f for cached, f in self.entries if cached is source)
        if not folder:
            return ""
        index, pipelines = _pipeline(input_context)
        prefix = os.path.join(folder, f"pipeline-{index}-of-{pipelines}")
        for leftover in glob.glob(glob.escape(prefix) + "_*"):
            os.remove(leftover)
        return prefix

    def shuffle_buffer(self, source, shuffle_buffer: int) -> int:
        """Cached images shuffled anew each epoch: all of them in memory (the buffer holds
        references to the cache's tensors), else a --shuffle-buffer of copies read from disk."""
        return source.size if self.kind == "memory" else max(1, min(source.size,
                                                                    shuffle_buffer))


def _pipeline(input_context) -> tuple[int, int]:
    if input_context is None:
        return 0, 1
    return input_context.input_pipeline_id, input_context.num_input_pipelines


def per_pipeline(size: int, pipelines: int) -> int:
    """The most examples one of `pipelines` input pipelines reads of `size`."""
    return math.ceil(size / pipelines)


def image_bytes(image_shape: Sequence[int]) -> int:
    return math.prod(image_shape) + OVERHEAD_BYTES


def available_memory(meminfo: str = "/proc/meminfo",
                     cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process may still use: the kernel's MemAvailable, or less under a container's
    memory limit (cgroup v2 or v1); None when neither can be read."""
    found = []
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            with open(os.path.join(cgroup, limit), encoding="ascii") as f:
                text = f.read().strip()
            with open(os.path.join(cgroup, usage), encoding="ascii") as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if text != "max" and int(text) < _NO_LIMIT:
            found.append(max(0, int(text) - used))
        break
    return min(found) if found else None


def disk_root(job_dir: str) -> str:
    """Where a disk cache goes: under a local job dir, else in a local temporary directory."""
    if storage.is_url(job_dir) or job_dir.startswith("/gcs/"):
        key = hashlib.sha256(job_dir.encode("utf-8")).hexdigest()[:12]
        return os.path.join(tempfile.gettempdir(), "vertex-trainer-cache", key)
    return os.path.join(job_dir, _FOLDER)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count / 1024:,.1f} KiB"


def plan(kind: str | None, sources: Sequence, *, job_dir: str, pipelines: int,
         memory: Callable[[], int | None] | None = None,
         free_disk: Callable[[str], int] | None = None) -> Cache | None:
    """The cache of `sources` (the training data first) for one of `pipelines` input pipelines,
    or None; raises TrainerError when it would not fit (`memory` and `free_disk` tell the room:
    by default this machine's `available_memory` and the free space of the disk). Raw-pixel
    sources are left out: there is nothing to decode."""
    if kind is None:
        return None
    encoded = [s for s in sources if not s.parses_batches]
    raw = [s.flag for s in sources if s.parses_batches]
    if not encoded:
        return Cache(kind, (), f"--cache {kind}: nothing to cache ({', '.join(raw)} hold raw "
                               "pixels, which need no decoding)")
    unknown = [s.flag for s in encoded if s.size is None]
    if unknown:
        raise TrainerError(f"--cache {kind}: the number of images in {unknown[0]} is unknown, so "
                           "the cache cannot be sized; leave --cache out")
    counts = [per_pipeline(s.size, pipelines) for s in encoded]
    needed = sum(count * image_bytes(s.image_shape) for count, s in zip(counts, encoded))
    height, width, channels = encoded[0].image_shape
    what = (" + ".join(f"{count:,} {s.flag}" for count, s in zip(counts, encoded))
            + f" images of {height}x{width}x{channels}"
            + (f" (this input pipeline's share of {pipelines})" if pipelines > 1 else ""))
    skipped = f"; {', '.join(raw)} hold raw pixels, not cached" if raw else ""
    if kind == "memory":
        available = (memory or available_memory)()
        if available is not None and needed > USABLE_SHARE * available:
            raise TrainerError(
                f"--cache memory: {what} need about {_size(needed)} as uint8 (plus "
                f"{OVERHEAD_BYTES:,} bytes each), more than {USABLE_SHARE:.0%} of the "
                f"{_size(available)} of memory available; use --cache disk, smaller "
                "--image-height/--image-width, or no --cache")
        room = "" if available is None else f" of {_size(available)} available"
        return Cache(kind, tuple((s, "") for s in encoded),
                     f"--cache memory: {what} kept decoded after their first read, about "
                     f"{_size(needed)}{room}{skipped}")
    root = disk_root(job_dir)
    folders = [os.path.join(root, s.fingerprint()) for s in encoded]
    _remove_other_caches(root, folders)
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    # A cache an earlier run of the same data completed is read, not written again.
    written = [bool(glob.glob(os.path.join(glob.escape(folder),
                                           f"pipeline-*-of-{pipelines}.index")))
               for folder in folders]
    to_write = sum(count * image_bytes(s.image_shape) for count, s, done
                   in zip(counts, encoded, written) if not done)
    if any(written):
        skipped += "; " + ", ".join(s.flag for s, done in zip(encoded, written) if done) + \
            " read from an earlier run's cache"
    free = (free_disk or _free_disk)(root)
    if to_write > free:
        raise TrainerError(f"--cache disk: {what} need about {_size(to_write)} in {root}, "
                           f"which has {_size(free)} free; free some space, use smaller "
                           "--image-height/--image-width, or no --cache")
    return Cache(kind, tuple(zip(encoded, folders)),
                 f"--cache disk: {what} written to {root} after their first read, about "
                 f"{_size(needed)}{skipped}")


def _free_disk(path: str) -> int:
    return shutil.disk_usage(path).free


def _remove_other_caches(root: str, keep: Sequence[str]) -> None:
    """Caches of data this run no longer reads (other files, labels or image size)."""
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if path not in keep and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
