"""Parallel uploads to gs:// with google-cloud-storage, skipping objects already there.

An object is skipped when it exists with the same CRC32C as the local file, so rerunning an
interrupted data preparation uploads only what is missing or different. google-cloud-storage
comes with the `[cloud]` extra; without it every function here is a one-line error saying so,
and `bucket()` lets a command find that out (and whether the bucket is there) before its work.
"""

from __future__ import annotations

import base64
import importlib
import os
from concurrent.futures import ThreadPoolExecutor

from trainer.errors import TrainerError
from trainer.tools.progress import Progress


def split_gs(uri: str) -> tuple[str, str]:
    """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise TrainerError(f"expected a gs://bucket/path URI, got {uri!r}")
    bucket, _, name = uri[len("gs://"):].partition("/")
    return bucket, name


def _crc32c(path: str) -> str:
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()


def bucket(destination: str, origin: str = ""):
    """The google-cloud-storage bucket of a gs:// folder; a one-line error when the package, the
    credentials or the bucket are missing, or access is denied."""
    where = f"{origin} {destination}".strip()
    try:
        storage = importlib.import_module("google.cloud.storage")
    except ImportError:
        raise TrainerError(f"{where}: uploading needs the google-cloud-storage package; install "
                           "it with pip install 'vertex-trainer[cloud]'") from None
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError

    bucket_name, _ = split_gs(destination)
    try:
        return storage.Client().get_bucket(bucket_name)
    except DefaultCredentialsError:
        raise TrainerError(f"{where}: no Google Cloud credentials found (run gcloud auth "
                           "application-default login, or set "
                           "GOOGLE_APPLICATION_CREDENTIALS)") from None
    except exceptions.NotFound:
        raise TrainerError(f"{where}: bucket gs://{bucket_name} does not exist") from None
    except exceptions.Forbidden:
        raise TrainerError(f"{where}: access to gs://{bucket_name} denied (check the account's "
                           "storage roles)") from None


def _folder(destination: str) -> str:
    return split_gs(destination.rstrip("/") + "/")[1]


def upload(paths: list[str], destination: str, threads: int = 8,
           progress: bool = True) -> tuple[list[str], list[str]]:
    """Uploads `paths` into the gs:// folder `destination`; returns (their URIs, the names of
    those already there unchanged, which were not sent)."""
    target, prefix = bucket(destination), _folder(destination)

    def send(path: str) -> bool:
        name = prefix + os.path.basename(path)
        existing = target.get_blob(name)  # None when absent; else with its metadata
        if existing is not None and existing.crc32c == _crc32c(path):
            return False
        target.blob(name).upload_from_filename(path)
        return True

    skipped = []
    with ThreadPoolExecutor(min(threads, max(1, len(paths)))) as pool, \
            Progress(f"upload to {destination}", len(paths), "files", progress) as bar:
        for path, did_send in zip(paths, pool.map(send, paths)):
            if not did_send:
                skipped.append(os.path.basename(path))
            bar.update()
    uris = [f"gs://{target.name}/{prefix}{os.path.basename(p)}" for p in paths]
    return uris, skipped


def list_names(destination: str) -> list[str]:
    """The names of the objects directly in the gs:// folder `destination`."""
    prefix = _folder(destination)
    blobs = bucket(destination).list_blobs(prefix=prefix, delimiter="/")
    return [blob.name[len(prefix):] for blob in blobs]


def delete(names: list[str], destination: str, threads: int = 8) -> None:
    """Deletes the objects `names` of the gs:// folder `destination`."""
    if not names:
        return
    target, prefix = bucket(destination), _folder(destination)
    with ThreadPoolExecutor(min(threads, len(names))) as pool:
        list(pool.map(lambda name: target.delete_blob(prefix + name), names))
