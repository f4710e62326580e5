"""The hostile inputs of issue 22, written on demand: `python -m tests.corpus.hostile DIR`.

Each entry is a file a user could hand the trainer, `predict` or `verify` by mistake or on
purpose, with the one-line error it must get (`{path}` stands for the file). The records are the
trainer's own schema (28x28x1, labels 0-9), so every command reads them with its defaults, and
the bytes are the same on every run (fixed pixels, GZIP with a zero timestamp).
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

RECORDS = 300
FORGED_AT = 150  # the 151st record
_IMAGE_PIXELS = 28 * 28


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes
    error: str  # what the one-line error says, `{path}` for the file


def _records() -> list[bytes]:
    from trainer.records import serialize_example

    pixels = bytes((i * 7919) % 251 for i in range(_IMAGE_PIXELS * 4))
    return [serialize_example(pixels[(i % 4) * _IMAGE_PIXELS:(i % 4 + 1) * _IMAGE_PIXELS],
                              i % 10, 28, 28, 1) for i in range(RECORDS)]


def _frame(payload: bytes) -> bytes:
    from trainer.records import masked_crc32c

    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", masked_crc32c(length)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


def _grey_png(height: int, width: int) -> bytes:
    """An all-black 8-bit grey PNG, written by hand (no encoder: the same bytes everywhere)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\0" + bytes(width) for _ in range(height))  # filter byte 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                                0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def entries() -> list[Entry]:
    from trainer.records import masked_crc32c

    framed = [_frame(record) for record in _records()]
    plain = b"".join(framed)
    at = sum(map(len, framed[:FORGED_AT]))  # where record 150's header starts
    forged_length = struct.pack("<Q", 2 ** 40)
    forged = (plain[:at] + forged_length + struct.pack("<I", masked_crc32c(forged_length))
              + plain[at + 12:])
    packed = gzip.compress(plain, mtime=0)
    latin_1 = "images/a.png,cat\nimages/b.png,caf\u00e9\n".encode("latin-1")
    cuts = [Entry(f"cut-gzip-{share}.tfrecord.gz", packed[:int(len(packed) * share / 100)],
                  "{path} is corrupt or truncated (the GZIP stream is cut short: the file ends "
                  f"at byte {int(len(packed) * share / 100):,}, before the stream's end marker)")
            for share in (50, 90, 99.9)]
    return [
        Entry("forged-length.tfrecord", forged,
              f"{{path}} is corrupt or truncated (record {FORGED_AT} at byte {at:,} declares "
              "1,099,511,627,776 bytes; at most 268,435,456 are allowed)"),
        *cuts,
        Entry("cut-plain-header.tfrecord", plain[:at + 5],
              f"{{path}} is corrupt or truncated (truncated record {FORGED_AT} header at byte "
              f"{at:,}: the data ends 5 bytes into its 12)"),
        Entry("bom.csv", "\ufeffimages/a.png,cat\nimages/b.png,dog\n".encode(), ""),
        Entry("bom.jsonl", "\ufeff".encode() + b'{"imageGcsUri": "images/a.png", '
              b'"classificationAnnotation": {"displayName": "cat"}}\n{"imageGcsUri": '
              b'"images/b.png", "classificationAnnotation": {"displayName": "dog"}}\n', ""),
        Entry("latin-1.csv", latin_1, f"{{path}} is not UTF-8: line 2, byte "
              f"{latin_1.index(0xE9)} (0xe9); save it as UTF-8 (in Excel: CSV UTF-8)"),
        # 1 KB that covered 28 x 28 as 27,720,000 x 28 floats: the trainer grew by 3.7 GB.
        Entry("wide-1x990000.png", _grey_png(1, 990_000),
              "{path}: image {path} cannot be resized for the model: its 990,000 x 1 pixels "
              "would be resized to 27,720,000 x 28 to cover the model's 28 x 28; at most 64 x 28 "
              "x 28 = 50,176 pixels (an aspect ratio up to 64 times the model's)"),
    ]


def write(directory: Path) -> dict[str, Path]:
    """Every entry as a file in `directory` (with the two images the manifests list)."""
    from tests.exports import images, png

    (directory / "images").mkdir(parents=True, exist_ok=True)
    for name, image in zip(("a.png", "b.png"), images(2)):
        (directory / "images" / name).write_bytes(png(image))
    paths = {}
    for entry in entries():
        paths[entry.name] = directory / entry.name
        paths[entry.name].write_bytes(entry.data)
    return paths


if __name__ == "__main__":
    for written in write(Path(sys.argv[1])).values():
        print(written)
