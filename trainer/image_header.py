"""Pixel counts of encoded images read from their headers alone, before anything is decoded.

A few hundred bytes of PNG can declare 16000 x 16000 pixels: decoding first and checking after
would already have spent the memory. `pixels` walks only the format's header structures (for
GIF every frame's descriptor, since a decoder allocates each frame), in pure Python.
"""

from __future__ import annotations

import struct

FORMATS = "PNG, JPEG, GIF or BMP"

# Start-of-frame markers: every 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length


class HeaderError(ValueError):
    """The bytes are not an image of a supported format, or its header is cut short."""


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise HeaderError("its header is cut short") from None


def _png(data: bytes) -> int:
    length, kind, width, height = _unpack(">I4sII", data, 8)
    if kind != b"IHDR" or length != 13:
        raise HeaderError("PNG without an IHDR header")
    return width * height


def _jpeg(data: bytes) -> int:
    offset = 2
    while True:
        marker_start, marker = _unpack(">BB", data, offset)
        if marker_start != 0xFF:
            raise HeaderError("JPEG with a broken marker sequence")
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise HeaderError("JPEG without a frame header")
        (length,) = _unpack(">H", data, offset + 2)
        if marker in _JPEG_FRAMES:
            height, width = _unpack(">HH", data, offset + 5)
            if height == 0:  # the height would come later, in a DNL segment: refuse to guess
                raise HeaderError("JPEG whose frame header leaves the height open")
            return width * height
        offset += 2 + length


def _gif_sub_blocks(data: bytes, offset: int) -> int:
    while True:
        (size,) = _unpack("B", data, offset)
        offset += 1 + size
        if size == 0:
            return offset


def _gif(data: bytes) -> int:
    width, height, flags = _unpack("<HHB", data, 6)
    offset = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    widest, tallest, frames = width, height, 0
    while True:
        (block,) = _unpack("B", data, offset)
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            offset = _gif_sub_blocks(data, offset + 2)
        elif block == 0x2C:  # image descriptor: every frame is decoded into its own buffer
            left, top, frame_width, frame_height, frame_flags = _unpack("<HHHHB", data,
                                                                        offset + 1)
            widest = max(widest, left + frame_width)
            tallest = max(tallest, top + frame_height)
            frames += frame_width * frame_height
            offset += 10 + (3 << ((frame_flags & 7) + 1) if frame_flags & 0x80 else 0)
            offset = _gif_sub_blocks(data, offset + 1)  # after the LZW minimum code size
        else:
            raise HeaderError("GIF with an unknown block")
        if offset >= len(data):  # decoders stop at the end of the data, trailer or not
            break
    return max(widest * tallest, frames)


def _bmp(data: bytes) -> int:
    (header_size,) = _unpack("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = _unpack("<HH", data, 18)
    else:
        width, height = _unpack("<ii", data, 18)
    return abs(width) * abs(height)  # a negative height means top-down rows


_READERS = ((b"\x89PNG\r\n\x1a\n", _png), (b"\xff\xd8", _jpeg), (b"GIF87a", _gif),
            (b"GIF89a", _gif), (b"BM", _bmp))


def pixels(data: bytes) -> int:
    """Width x height that decoding `data` would allocate (for GIF, the larger of the canvas
    and all frames together); HeaderError if it is not a readable PNG, JPEG, GIF or BMP."""
    for magic, reader in _READERS:
        if data.startswith(magic):
            return reader(data)
    raise HeaderError(f"not a {FORMATS} image")
