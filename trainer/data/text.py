"""Text files the data flags point at (manifests, label maps), read as UTF-8.

A UTF-8 byte-order mark (what Excel's "CSV UTF-8" and Notepad write) is dropped, so that it never
becomes part of a first path, label or JSON line. Any other encoding is a one-line error naming
the line and byte, instead of a guess. Pure Python: TensorFlow is imported only to read a file.
"""

from __future__ import annotations

import codecs

from trainer import storage
from trainer.errors import TrainerError, short_reason

_UTF16 = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def decode(data: bytes, path: str, origin: str) -> str:
    """The text of a file's bytes; raises TrainerError for text that is not UTF-8."""
    if data.startswith(_UTF16):
        raise TrainerError(f"{origin}: {path} is UTF-16 text, not UTF-8; save it as UTF-8 "
                           "(in Excel: CSV UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data.count(b"\n", 0, offset) + 1
        raise TrainerError(
            f"{origin}: {path} is not UTF-8: line {line}, byte {offset:,} (0x{data[offset]:02x}); "
            "save it as UTF-8 (in Excel: CSV UTF-8)") from None


def read(path: str, origin: str, max_bytes: int | None = None) -> str:
    """The file's text; with `max_bytes`, a longer file is an error, read no further."""
    import tensorflow as tf

    try:
        with storage.open_binary(path) as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except tf.errors.OpError as err:
        raise TrainerError(f"{origin}: cannot read {path} ({short_reason(err)})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise TrainerError(f"{origin}: {path} is larger than the {max_bytes:,} bytes it may "
                           "hold")
    return decode(data, path, origin)
