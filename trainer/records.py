"""The record schema and the TFRecord file format, in pure Python.

Used to check every input file up front (compression, framing, schema of its first record) so
that bad files fail with a message naming the file before any output is written, and by the
data-preparation script to write records the trainer reads.

Schemas read:
  current: image = raw uint8 bytes (H*W*C, row-major HWC), label = int64,
           height/width/depth = int64 (checked against the flags when present);
  classic: image_raw = float32 (or uint8) bytes, label = int64 (the TF tutorials' converter).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib

IMAGE = "image"
LEGACY_IMAGE = "image_raw"
LABEL = "label"
SHAPE_KEYS = ("height", "width", "depth")

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER = 12  # uint64 length + masked crc32c of the length
_CHUNK = 1 << 20


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset so that CRCs of CRCs stay distinct."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class RecordFormatError(ValueError):
    """The bytes are not TFRecord framing (the message says what is wrong)."""


def _valid_header(header: bytes) -> bool:
    return (len(header) == _HEADER
            and struct.unpack("<I", header[8:])[0] == masked_crc32c(header[:8]))


def compression_of(head: bytes) -> str:
    """'' for plain TFRecord or 'GZIP', from a file's first bytes (at least 12 of them).

    A valid length checksum identifies a plain file first: the gzip magic number alone could
    also be the low bytes of a plain record's length.
    """
    if _valid_header(head[:_HEADER]):
        return ""
    if head[:2] == _GZIP_MAGIC:
        return "GZIP"
    raise RecordFormatError("not a TFRecord file (bad length checksum in the first record header, "
                            "and not GZIP-compressed)")


def read_first_record(raw: io.BufferedIOBase, compression: str) -> bytes | None:
    """The first record's payload, None for a file without records; checks both checksums."""
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "GZIP" else raw
    try:
        header = stream.read(_HEADER)
        if not header:
            return None
        if not _valid_header(header):
            raise RecordFormatError("corrupt first record header (length checksum mismatch)")
        (length,) = struct.unpack("<Q", header[:8])
        payload = _read_up_to(stream, length)
        footer = stream.read(4)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise RecordFormatError(f"unreadable GZIP data ({err})") from None
    if len(payload) < length or len(footer) < 4:
        raise RecordFormatError(f"truncated first record (expected {length} bytes)")
    if struct.unpack("<I", footer)[0] != masked_crc32c(payload):
        raise RecordFormatError("corrupt first record (data checksum mismatch)")
    return payload


def _read_up_to(stream, size: int) -> bytes:
    """At most `size` bytes, read a chunk at a time: a forged length (up to 2^64) costs no more
    memory than the file holds (TensorFlow's file reader crashes the process when asked for
    2^40 bytes at once)."""
    chunks = []
    while size > 0:
        chunk = stream.read(min(size, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serialize_example(image: bytes, label: int, height: int, width: int, depth: int) -> bytes:
    """One record of the current schema, as tf.train.Example bytes."""
    from tensorflow.core.example import example_pb2, feature_pb2

    def ints(value):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))

    features = {
        IMAGE: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[image])),
        LABEL: ints(label), "height": ints(height), "width": ints(width), "depth": ints(depth),
    }
    example = example_pb2.Example(features=feature_pb2.Features(feature=features))
    # Map order otherwise varies from process to process: deterministic bytes make shards
    # reproducible, so re-uploads can be skipped by checksum.
    return example.SerializeToString(deterministic=True)
