"""Reading the model's files where TensorFlow may be absent: local paths (and /gcs/ mounts),
gs:// through google-cloud-storage (Application Default Credentials, $STORAGE_EMULATOR_HOST),
else through TensorFlow's gs:// client when only that is installed.

google-cloud-storage retries as TensorFlow's gs:// client does, and honours the same variables,
so a model reads the same way whichever client the image has: a failed request (HTTP 5xx or 429,
a broken connection) is tried again up to $GCS_RETRY_CONFIG_MAX_RETRIES (10) times, waiting
$GCS_RETRY_CONFIG_INIT_DELAY_TIME_US (1 s) doubling to $GCS_RETRY_CONFIG_MAX_DELAY_TIME_US
(32 s).
"""

from __future__ import annotations

import functools
import os
import time

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
            return _retried(lambda: _blob(path).download_as_bytes(retry=None))
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except Exception as err:  # OSError, google.api_core errors, TensorFlow's OpError
        reason = " ".join(str(getattr(err, "message", None) or err).split())[:200]
        raise FileError(f"cannot read {path} ({reason or type(err).__name__})") from None


def _retry_config() -> tuple[int, float, float]:
    """(retries, first delay, largest delay) in TensorFlow's variables and defaults."""
    def number(name: str, default: float) -> float:
        try:
            return max(0.0, float(os.environ.get(name, default)))
        except ValueError:
            return default

    return (int(number("GCS_RETRY_CONFIG_MAX_RETRIES", 10)),
            number("GCS_RETRY_CONFIG_INIT_DELAY_TIME_US", 1e6) / 1e6,
            number("GCS_RETRY_CONFIG_MAX_DELAY_TIME_US", 32e6) / 1e6)


def _retried(request):
    import requests
    from google.api_core import exceptions

    transient = (exceptions.ServerError, exceptions.TooManyRequests, ConnectionError,
                 requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
    retries, delay, largest = _retry_config()
    for attempt in range(retries + 1):
        try:
            return request()
        except transient as err:
            if attempt == retries:
                code = getattr(err, "code", None)
                reason = f"HTTP {code}" if code else " ".join(str(err).split())[:160]
                raise FileError(f"all {retries} retry attempts failed, the last with "
                                f"{reason}") from None
            time.sleep(min(delay * 2 ** attempt, largest))


def exists(path: str) -> bool:
    import os

    if not is_url(path):
        return os.path.exists(path)
    if path.startswith(_GS) and _gcs_client_available():
        try:
            return _retried(lambda: _blob(path).exists(retry=None))
        except Exception as err:
            raise FileError(f"cannot reach {path} ({' '.join(str(err).split())[:200]})") \
                from None
    import tensorflow as tf

    return tf.io.gfile.exists(path)
