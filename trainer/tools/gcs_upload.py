"""Parallel uploads to gs:// with google-cloud-storage, skipping objects already there.

An object is skipped when it exists with the same CRC32C as the local file, so rerunning an
interrupted data preparation uploads only what is missing or different.
"""

from __future__ import annotations

import base64
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from trainer.errors import TrainerError


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


def upload(paths: list[str], destination: str, threads: int = 8,
           progress: bool = True) -> tuple[list[str], int]:
    """Uploads `paths` into the gs:// folder `destination`; returns (URIs, number skipped)."""
    from google.api_core import exceptions
    from google.cloud import storage
    from tqdm import tqdm

    bucket_name, prefix = split_gs(destination.rstrip("/") + "/")
    client = storage.Client()
    try:
        bucket = client.get_bucket(bucket_name)
    except exceptions.NotFound:
        raise TrainerError(f"bucket gs://{bucket_name} does not exist") from None
    except exceptions.Forbidden:
        raise TrainerError(f"access to gs://{bucket_name} denied (check the account's "
                           "storage roles)") from None

    def send(path: str) -> bool:
        name = prefix + os.path.basename(path)
        existing = bucket.get_blob(name)  # None when absent; else with its metadata
        if existing is not None and existing.crc32c == _crc32c(path):
            return False
        bucket.blob(name).upload_from_filename(path)
        return True

    with ThreadPoolExecutor(min(threads, max(1, len(paths)))) as pool, \
            tqdm(total=len(paths), desc=f"upload to {destination}", unit="file",
                 disable=not progress, file=sys.stderr) as bar:
        sent = []
        for did_send in pool.map(send, paths):
            sent.append(did_send)
            bar.update(1)
    uris = [f"gs://{bucket_name}/{prefix}{os.path.basename(p)}" for p in paths]
    return uris, sent.count(False)
