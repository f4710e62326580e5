"""The slim runtime's preprocessing against TensorFlow's: every format, mode, channel count and
resize the `encoded_image` signature meets, and the resize-to-cover bound."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from trainer import image_bounds
from trainer.data import images as tf_images
from trainer.serving import images

SIZES = [(28, 28), (5, 7), (40, 31), (100, 10), (3, 300), (27, 29), (280, 280), (1, 50)]
SHAPES = [(28, 28, 1), (28, 28, 3), (32, 24, 3)]


def encode(array, kind, mode=None, **options) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def variants(height, width, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    return {
        "png-rgb": encode(rgb, "PNG"), "png-grey": encode(grey, "PNG"),
        "png-rgba": encode(rgba, "PNG"), "png-palette": encode(rgb, "PNG", "P"),
        "png-1bit": encode(grey, "PNG", "1"), "png-grey-alpha": encode(rgba, "PNG", "LA"),
        "png-16bit-grey": encode(grey.astype(np.uint16) * 257 + 7, "PNG"),
        "jpeg-rgb": encode(rgb, "JPEG", quality=90), "jpeg-grey": encode(grey, "JPEG"),
        "jpeg-420": encode(rgb, "JPEG", subsampling=2),
        "jpeg-progressive": encode(rgb, "JPEG", progressive=True),
        "gif": encode(rgb, "GIF", "P"), "gif-grey": encode(grey, "GIF"),
        "gif-transparent": encode(rgb, "GIF", "P", transparency=3),
        "bmp-24": encode(rgb, "BMP"), "bmp-8": encode(rgb, "BMP", "P"),
        "bmp-grey": encode(grey, "BMP"),
    }


CASES = [(f"{kind} {h}x{w}", (h, w), data) for i, (h, w) in enumerate(SIZES)
         for kind, data in variants(h, w, i).items()]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_image_is_preprocessed_as_the_signature_does(shape):
    for name, size, data in CASES:
        if image_bounds.cover_problem(*size, shape[:2]):
            # The server refuses it before preprocessing (trainer/serve.py); so does TensorFlow.
            with pytest.raises(tf.errors.InvalidArgumentError, match="assertion failed|Expected"):
                tf_images.eval_image(tf.constant(data), shape)
            continue
        want = tf_images.eval_image(tf.constant(data), shape).numpy()
        got = images.eval_image(data, shape)
        assert got.shape == want.shape and got.dtype == np.float32, name
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)


NOISE = np.random.default_rng(0).integers(0, 256, (30, 30), dtype=np.uint8)


@pytest.mark.parametrize("kind, data, message", [
    ("cmyk-jpeg", encode(np.zeros((8, 8, 4), np.uint8), "JPEG", "CMYK"),
     "a CMYK JPEG is not served by this runtime"),
    ("16-bit colour png", None, "16-bit colour PNG is not served"),
    ("png without IEND", encode(NOISE, "PNG")[:-12], "its PNG data is cut short before IEND"),
    ("truncated png", encode(NOISE, "PNG")[:400], "cannot decode the image"),
    ("webp", None, "a WEBP image; expected PNG, JPEG, GIF or BMP"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "")
def test_what_would_be_read_differently_is_refused_by_name(kind, data, message, tmp_path):
    if kind == "16-bit colour png":
        path = tmp_path / "rgb16.png"
        # Pillow writes no 16-bit colour PNG; TensorFlow does.
        tf.io.write_file(str(path), tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint16)))
        data = path.read_bytes()
        np.testing.assert_array_equal(  # for a colour model it is read as TensorFlow reads it
            images.decode(data, 3), tf.io.decode_png(data, channels=3).numpy())
    if kind == "webp":
        data = encode(np.zeros((8, 8, 3), np.uint8), "WEBP")
    with pytest.raises(images.ImageError, match=message):
        images.eval_image(data, (28, 28, 1))


def test_the_cover_size_is_the_signatures_and_the_bound_refuses_extreme_aspects():
    for (height, width) in SIZES + [(990_000, 1), (1, 990_000), (17, 4000), (4000, 3000)]:
        size = tf.cast([height, width], tf.float32)
        scale = tf.reduce_max(tf.constant([28.0, 28.0]) / size)
        want = tf.maximum(tf.cast(tf.math.ceil(size * scale - 1e-3), tf.int32), [28, 28])
        assert image_bounds.cover_size(height, width, (28, 28)) == tuple(want.numpy().tolist())
    assert image_bounds.cover_problem(1, 990_000, (28, 28)).startswith(
        "its 990,000 x 1 pixels would be resized to 27,720,000 x 28 to cover the model's 28 x 28")
    assert image_bounds.cover_problem(28, 28 * 64, (28, 28)) is None  # 1:64, the limit
    assert image_bounds.cover_problem(28, 28 * 65, (28, 28)) is not None
    assert image_bounds.cover_problem(4000, 3000, (224, 224)) is None
    assert image_bounds.cover_problem(0, 5, (28, 28)) == "the image is 5 x 0 pixels"
