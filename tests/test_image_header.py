"""Image sizes read from headers match what TensorFlow decodes; anything else is refused."""

import io

import numpy as np
import pytest
from PIL import Image

from trainer import image_header


def encode(size, fmt, **options) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 7).save(out, fmt, **options)
    return out.getvalue()


def gif_frames(sizes) -> bytes:
    """An animation of distinct frames (a decoder allocates each)."""
    out = io.BytesIO()
    frames = [Image.new("L", size, 120 * i) for i, size in enumerate(sizes)]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


@pytest.mark.parametrize("data, pixels", [
    (encode((31, 17), "PNG"), 31 * 17),
    (encode((1200, 5), "JPEG"), 1200 * 5),
    (encode((40, 30), "JPEG", progressive=True), 40 * 30),
    (encode((9, 8), "BMP"), 9 * 8),
    (encode((13, 11), "GIF"), 13 * 11),
    (gif_frames([(10, 10), (10, 10), (10, 10)]), 300),
])
def test_pixels_agree_with_tensorflow(data, pixels):
    import tensorflow as tf

    assert image_header.pixels(data) == pixels
    decoded = tf.io.decode_image(data, expand_animations=True)
    frames = decoded.shape[0] if decoded.shape.rank == 4 else 1
    assert frames * decoded.shape[-3] * decoded.shape[-2] == pixels


def test_declared_sizes_count_without_any_pixel_data():
    png = encode((1, 1), "PNG")
    bomb = png[:16] + (16000).to_bytes(4, "big") * 2 + png[24:]
    assert image_header.pixels(bomb) == 256_000_000
    bmp = bytearray(encode((1, 1), "BMP"))
    bmp[18:26] = np.array([20000, -20000], "<i4").tobytes()  # negative: rows top-down
    assert image_header.pixels(bytes(bmp)) == 400_000_000


@pytest.mark.parametrize("data, reason", [
    (b"", "not a PNG, JPEG, GIF or BMP image"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "not a PNG, JPEG, GIF or BMP image"),
    (encode((5, 5), "PNG")[:20], "its header is cut short"),
    (b"\xff\xd8\xff\xda\0\2", "JPEG without a frame header"),
    (b"\xff\xd8\x00\x00", "JPEG with a broken marker sequence"),
    (b"\xff\xd8\xff\xc0\0\x11\x08\0\0\0\x10", "JPEG whose frame header leaves the height open"),
    (b"GIF89a\1\0\1\0\0\0\0\x99", "GIF with an unknown block"),
])
def test_unreadable_headers_are_refused(data, reason):
    with pytest.raises(image_header.HeaderError, match=reason):
        image_header.pixels(data)
