"""Reading the model's files where TensorFlow may be absent: local paths (and /gcs/ mounts),
gs:// through google-cloud-storage (Application Default Credentials, $STORAGE_EMULATOR_HOST),
else through TensorFlow's gs:// client when only that is installed."""

from __future__ import annotations

import functools

from trainer.storage import is_url, join  # noqa: F401  (join: for callers' paths)

_GS = "gs://"


class FileError(OSError):
    """A model file that cannot be read; one line naming it."""


@functools.lru_cache(maxsize=None)
def _bucket(name: str):
    from google.cloud import storage

    return storage.Client().bucket(name)


def _blob(path: str):
    bucket, _, name = path[len(_GS):].partition("/")
    return _bucket(bucket).blob(name)


def _gcs_client_available() -> bool:
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        return False
    return True


def read(path: str) -> bytes:
    try:
        if not is_url(path):
            with open(path, "rb") as f:
                return f.read()
        if path.startswith(_GS) and _gcs_client_available():
            return _blob(path).download_as_bytes()
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except Exception as err:  # OSError, google.api_core errors, TensorFlow's OpError
        reason = " ".join(str(getattr(err, "message", None) or err).split())[:200]
        raise FileError(f"cannot read {path} ({reason or type(err).__name__})") from None


def exists(path: str) -> bool:
    import os

    if not is_url(path):
        return os.path.exists(path)
    if path.startswith(_GS) and _gcs_client_available():
        try:
            return _blob(path).exists()
        except Exception as err:
            raise FileError(f"cannot reach {path} ({' '.join(str(err).split())[:200]})") \
                from None
    import tensorflow as tf

    return tf.io.gfile.exists(path)
