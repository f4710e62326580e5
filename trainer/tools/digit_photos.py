"""MNIST digits as a folder of small photos: PNG and JPEG files of 20-60 px (rarely square),
every third one RGB with a colour tint, in class folders named after the digits. What a user's
folder of small photos looks like; the photo benchmarks and the tests write them.
"""

from __future__ import annotations

import io
import os

import numpy as np

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """uint8 H x W x C pixels as png, jpg (quality 90), gif or bmp bytes."""
    import tensorflow as tf

    if fmt == "png":
        return tf.io.encode_png(pixels).numpy()
    if fmt == "jpg":
        return tf.io.encode_jpeg(pixels, quality=90).numpy()
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    image.save(buffer, format={"gif": "GIF", "bmp": "BMP"}[fmt])
    return buffer.getvalue()


def photo(digit: np.ndarray, rng: np.random.Generator, fmt: str, colour: bool) -> bytes:
    """A 28 x 28 digit resized to 20-60 px each side, optionally RGB with a tint, encoded."""
    import tensorflow as tf

    height, width = (int(v) for v in rng.integers(20, 61, 2))
    image = tf.image.resize(digit[..., None].astype(np.float32), [height, width]).numpy()
    if colour:
        image = image * rng.uniform(0.6, 1.0, 3)
    return encode(np.clip(np.round(image), 0, 255).astype(np.uint8), fmt)


def write_folder(patterns: str, root: str, limit: int | None = None, seed: int = 0) -> int:
    """ROOT/<digit name>/<n>.png|jpg from raw MNIST records (the first `limit`, or all), PNG
    and JPEG alternating; returns how many files it wrote."""
    from trainer import data

    source = data.inspect_input(tuple(patterns.split(",")), "--train-files", (28, 28, 1), 10)
    rng = np.random.default_rng(seed)
    written = 0
    for images, labels in data.make_dataset(source, batch_size=1000, training=False):
        for image, label in zip(images.numpy(), labels.numpy()):
            if limit is not None and written >= limit:
                return written
            fmt = "png" if written % 2 else "jpg"
            path = os.path.join(root, NAMES[int(label)], f"{written:05d}.{fmt}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            digit = np.clip(np.rint(image[..., 0] * 255), 0, 255).astype(np.uint8)
            with open(path, "wb") as f:
                f.write(photo(digit, rng, fmt, colour=written % 3 == 0))
            written += 1
    return written
