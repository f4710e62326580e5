"""Paths and file-system access for every path flag, through tf.io.gfile.

Local paths, Vertex's FUSE mounts (/gcs/bucket/...) and gs:// URLs all take this one code path,
so what works on a laptop works on Vertex. The path helpers are pure Python; TensorFlow is
imported only where a file is touched, so the flag parser can use them.
"""

from __future__ import annotations

import os
import posixpath
import re
import time

from trainer.errors import TrainerError, short_reason


def is_url(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    """Joins path parts; URLs (gs://) always use '/'."""
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


# TensorFlow's GCS errors quote the response body on the first line and name the object on a
# later one ("\t when reading metadata of gs://b/o"): one line needs the object, not the body.
_RESPONSE_BODY = re.compile(r" with body '.*", re.DOTALL)
_GCS_OBJECT = re.compile(r"^\s*(when .*gs://\S+)", re.MULTILINE)
# The status GCS answered; digits elsewhere in a message (an export's timestamp) are no status.
_HTTP_STATUS = re.compile(r"HTTP response code (\d{3})\b")


def problem(err: Exception, path: str) -> str:
    """What went wrong with `path`, in words: a missing bucket or denied access said plainly,
    and for GCS the object that failed."""
    import tensorflow as tf

    message = getattr(err, "message", None) or str(err)
    status = _HTTP_STATUS.search(message)
    status = status[1] if status else None
    found = _GCS_OBJECT.search(message)
    bucket = "/".join(path.split("/")[:3]) if path.startswith("gs://") else None
    if bucket and isinstance(err, tf.errors.NotFoundError) and status == "404":
        return f"bucket {bucket} does not exist (or is not visible to this account)"
    if isinstance(err, tf.errors.PermissionDeniedError) or status == "403":
        detail = found[1] if found else short_reason(err)
        return f"access denied ({detail}); check the account's storage roles"
    if found:
        return f"{_RESPONSE_BODY.sub('', message.splitlines()[0])} {found[1]}"
    return short_reason(err)


def expand_patterns(patterns: tuple[str, ...], flag: str) -> list[str]:
    """Sorted, de-duplicated files matching the globs; every pattern must match something."""
    import tensorflow as tf

    files: set[str] = set()
    for pattern in patterns:
        try:
            matches = tf.io.gfile.glob(pattern)
        except tf.errors.OpError as err:
            raise TrainerError(f"{flag}: cannot list {pattern!r}: {problem(err, pattern)}") \
                from None
        matches = [m for m in matches if not tf.io.gfile.isdir(m)]
        if not matches:
            raise TrainerError(f"{flag}: no file matches {pattern!r}")
        files.update(matches)
    return sorted(files)


def read_head(path: str, size: int) -> bytes:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(size)


def exists(path: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def dirname(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path else "."


def write_text(path: str, text: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def open_binary(path: str):
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def ensure_writable_dir(path: str, flag: str) -> None:
    """Creates `path` and proves it writable with a probe file, before any work starts."""
    import tensorflow as tf

    probe = join(path, f".write-probe-{os.getpid()}-{time.time_ns()}")
    try:
        # TensorFlow's recursive makedirs retries forever under a bucket that does not exist
        # (seen against the GCS JSON API): a mistyped bucket would hang the job, so look first.
        bucket = "/".join(path.split("/")[:3]) + "/" if path.startswith("gs://") else None
        if bucket and not tf.io.gfile.exists(bucket):
            raise TrainerError(f"{flag}: cannot write to {path} (bucket {bucket.rstrip('/')} "
                               "does not exist or is not visible to this account)")
        tf.io.gfile.makedirs(path)
        with tf.io.gfile.GFile(probe, "wb") as f:
            f.write(b"ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as err:
        raise TrainerError(f"{flag}: cannot write to {path} ({problem(err, path)})") from None


def replace_dir(source: str, target: str) -> None:
    """Moves a finished directory into place, replacing whatever `target` held."""
    import tensorflow as tf

    if tf.io.gfile.exists(target):
        tf.io.gfile.rmtree(target)
    tf.io.gfile.rename(source, target)
