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

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import google_crc32c

IMAGE = "image"
LEGACY_IMAGE = "image_raw"
LABEL = "label"
SHAPE_KEYS = ("height", "width", "depth")

# A record larger than this is refused before TensorFlow's reader sees it: the reader allocates
# a record's declared length at once, and a forged 2^40 crashes the process (SIGSEGV). An
# Example this large could not be parsed anyway (protocol buffers stop at 2 GiB), and no image
# the trainer decodes comes near it.
MAX_RECORD_BYTES = 256 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER = 12  # uint64 length + masked crc32c of the length
_FOOTER = 4  # masked crc32c of the payload
_CHUNK = 1 << 20
_LENGTH_AND_CRC = struct.Struct("<QI")
_CRC = struct.Struct("<I")


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset so that CRCs of CRCs stay distinct."""
    return _mask(google_crc32c.value(data))


_EMPTY_RECORD_HEADER = bytes(8) + _CRC.pack(masked_crc32c(bytes(8)))


class RecordFormatError(ValueError):
    """The bytes are not TFRecord framing (the message says what is wrong, and where)."""


def _valid_header(header: bytes) -> bool:
    return (len(header) == _HEADER
            and _CRC.unpack_from(header, 8)[0] == masked_crc32c(header[:8]))


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


def _plain_chunks(raw: BinaryIO) -> Iterator[bytes]:
    while True:
        chunk = raw.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _gzip_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The uncompressed bytes of every GZIP member, at most a chunk at a time (a small file that
    inflates to gigabytes never sits in memory). zlib checks each member's trailer (CRC-32 and
    length); what follows a member must be another member, as TensorFlow's reader requires."""
    consumed = 0  # compressed bytes read
    member = zlib.decompressobj(wbits=31)
    data = b""
    try:
        while True:
            if not data:
                data = raw.read(_CHUNK)
                consumed += len(data)
            if not data:
                rest = member.flush()  # output zlib may still hold for input it has taken
                if rest:
                    yield rest
                if not member.eof:
                    raise RecordFormatError(f"the GZIP stream is cut short: the file ends at "
                                            f"byte {consumed:,}, before the stream's end marker")
                return
            if member.eof:
                member = zlib.decompressobj(wbits=31)
            out = member.decompress(data, _CHUNK)
            data = member.unconsumed_tail or member.unused_data
            if out:
                yield out
    except zlib.error as err:
        raise RecordFormatError(f"unreadable GZIP data before byte {consumed:,} ({err})") from None


@dataclass(frozen=True)
class Framing:
    """What a verified TFRecord stream holds."""

    records: int
    largest: int  # bytes of the largest record


def _records(raw: BinaryIO, compression: str, max_record: int,
             first_only: bool = False) -> Iterator[list[tuple[int, bytes]]]:
    """Lists of (length, payload) of consecutive records, each checked: header checksum, length
    at most `max_record`, payload checksum, nothing cut short. Errors name the record and its
    byte offset (in the uncompressed stream for GZIP files). The records wholly inside the
    buffer are checked in one tight loop; a record across chunks waits for `fill`."""
    chunks = _gzip_chunks(raw) if compression == "GZIP" else _plain_chunks(raw)
    where = "uncompressed byte" if compression == "GZIP" else "byte"
    buffer, pos, base, index = b"", 0, 0, 0  # base: stream offset of buffer[0]
    checksum, unpack_header, unpack_crc = google_crc32c.value, _LENGTH_AND_CRC.unpack_from, \
        _CRC.unpack_from
    known, known_length = _EMPTY_RECORD_HEADER, 0  # the last header that checked out: a header
    # equal to it needs no checking

    def fill(size: int) -> bool:
        """At least `size` bytes from `pos` on in the buffer; False at the end of the stream."""
        nonlocal buffer, pos, base
        parts, have = [buffer[pos:]], len(buffer) - pos
        base += pos
        pos = 0
        while have < size:
            chunk = next(chunks, b"")
            if not chunk:
                buffer = b"".join(parts)
                return False
            parts.append(chunk)
            have += len(chunk)
        buffer = b"".join(parts)
        return True

    while True:
        if len(buffer) - pos < _HEADER and not fill(_HEADER):
            if len(buffer) == pos:
                return
            raise RecordFormatError(
                f"truncated {_name(index)} header at {where} {base + pos:,}: the data ends "
                f"{len(buffer) - pos} bytes into its {_HEADER}")
        batch, size, length = [], len(buffer), 0
        while pos + _HEADER <= size:
            if buffer.startswith(known, pos):
                length = known_length
            else:
                length, crc = unpack_header(buffer, pos)
                if _mask(checksum(buffer[pos:pos + 8])) != crc:
                    raise RecordFormatError(f"corrupt {_name(index + len(batch))} header at "
                                            f"{where} {base + pos:,} (length checksum mismatch)")
                if length > max_record:
                    raise RecordFormatError(f"{_name(index + len(batch))} at {where} "
                                            f"{base + pos:,} declares {length:,} bytes; at most "
                                            f"{max_record:,} are allowed")
                known, known_length = buffer[pos:pos + _HEADER], length
            end = pos + _HEADER + length
            if end + _FOOTER > size:
                break
            payload = buffer[pos + _HEADER:end]
            crc = checksum(payload)
            if (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF != unpack_crc(buffer,
                                                                                     end)[0]:
                raise RecordFormatError(f"corrupt {_name(index + len(batch))} at {where} "
                                        f"{base + pos:,} (data checksum mismatch)")
            batch.append((length, payload))
            pos = end + _FOOTER
            if first_only:
                yield batch
                return
        index += len(batch)
        if batch:
            yield batch
        if pos + _HEADER <= size and not fill(_HEADER + length + _FOOTER):
            raise RecordFormatError(f"truncated {_name(index)} at {where} {base + pos:,}: it "
                                    f"declares {length:,} bytes, the data ends "
                                    f"{len(buffer) - pos - _HEADER:,} bytes after its header")


def _name(index: int) -> str:
    return "first record" if index == 0 else f"record {index:,}"


def verify(raw: BinaryIO, compression: str, max_record: int = MAX_RECORD_BYTES) -> Framing:
    """Reads a whole TFRecord stream and proves that TensorFlow's reader can read all of it;
    raises RecordFormatError naming the first problem and its byte offset."""
    count, largest = 0, 0
    for batch in _records(raw, compression, max_record):
        count += len(batch)
        largest = max(largest, max(length for length, _ in batch))
    return Framing(count, largest)


def read_first_record(raw: BinaryIO, compression: str,
                      max_record: int = MAX_RECORD_BYTES) -> bytes | None:
    """The first record's payload, None for a file without records; checks both checksums."""
    for batch in _records(raw, compression, max_record, first_only=True):
        return batch[0][1]
    return None


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
