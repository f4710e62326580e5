"""Encoded image bytes -> float32 H x W x C in [0, 1]: decoding, resizing and augmentation.

JPEG, PNG, GIF (first frame) and BMP decode to the model's channel count (grey <-> RGB; alpha is
dropped). Evaluation and serving resize the image to cover H x W, keeping its aspect ratio, and
crop the centre; an image already H x W passes untouched (exact). An image whose covering size
breaks trainer/image_bounds.py's rule (the server's) fails instead, before the resize: a 2 KB
1 x 990,000 PNG would otherwise cover 28 x 28 as 3.1 GB of floats. Training with augmentation
takes a random crop of MIN-100% of the area (--augment-min-area, 50% by default: ImageNet's 8%
cut the object out of small photos) and aspect ratio 3/4-4/3, resizes it to H x W and flips it
horizontally at random; for JPEG only the crop window is decoded, which saves most of the
decoding time of a large photo. With --cache the image is kept as evaluated, in uint8, and
augmentation crops that H x W image instead.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.config import AUGMENT_MIN_AREA
from trainer.image_bounds import MAX_COVER_FACTOR

COVER_CHECK = "CoverBound"  # the name of the op that refuses an image, as errors show it
_ASPECT_RANGE = (3 / 4, 4 / 3)


def _is_gif_or_bmp(data):
    return tf.logical_or(tf.strings.substr(data, 0, 3) == b"GIF",
                         tf.strings.substr(data, 0, 2) == b"BM")


def decode(data, channels: int):
    """uint8 [h, w, channels] of the first frame; raises an op error for undecodable bytes."""
    def native():
        return tf.io.decode_image(data, channels=channels, expand_animations=False)

    if channels != 1:
        return native()
    # GIF and BMP decoders produce colour only.
    return tf.cond(_is_gif_or_bmp(data), lambda: tf.image.rgb_to_grayscale(
        tf.io.decode_image(data, channels=3, expand_animations=False)), native)


def to_float(image):
    return tf.cast(image, tf.float32) * (1.0 / 255.0)


def _cover(data, image_shape):
    """(uint8 image, the int32 size that covers H x W with its aspect kept); an op error when
    that size breaks image_bounds.cover_problem's rule. The size is image_bounds.cover_size in
    the same float32 arithmetic, so the server and this code refuse the same images. The check
    adds four scalar ops to the ones the resize needs anyway, and hangs on the size, not the
    image: a dependency on the image itself measured 4-8% more CPU per small PNG."""
    height, width, channels = image_shape
    image = decode(data, channels)
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    target = tf.constant([height, width], tf.float32)
    scale = tf.reduce_max(target / size)
    covering = tf.maximum(tf.math.ceil(size * scale - 1e-3), target)
    # In float64: the product of two whole float32s is exact there, and nothing overflows.
    fits = tf.reduce_prod(tf.cast(covering, tf.float64)) <= MAX_COVER_FACTOR * height * width
    check = tf.debugging.Assert(fits, [size], name=COVER_CHECK)
    with tf.control_dependencies([check]):
        return image, tf.cast(covering, tf.int32)


def covering_size(data, image_shape):
    """The size the image is resized to (decoding it); an op error beyond the bound."""
    return _cover(data, image_shape)[1]


def eval_image(data, image_shape):
    """Resize to cover H x W (aspect kept), then the centre H x W; as served."""
    height, width, _ = image_shape
    image, covering = _cover(data, image_shape)
    # Resampling an image that already fits would still change it; skip it to stay exact.
    # (The shape is pinned after the cond: inside a branch TensorFlow checks it eagerly.)
    fits = tf.reduce_all(tf.shape(image)[:2] == [height, width])
    # Resampling the uint8 pixels and scaling the smaller result measured 13% faster than
    # resampling floats, the same values up to rounding.
    image = tf.cond(fits, lambda: to_float(image), lambda: tf.image.resize(
        image, covering, antialias=True) * (1.0 / 255.0))
    offset = (tf.shape(image)[:2] - [height, width]) // 2
    image = tf.image.crop_to_bounding_box(image, offset[0], offset[1], height, width)
    return tf.ensure_shape(image, image_shape)


def cached_image(data, image_shape):
    """What --cache keeps of an image: as evaluated, in uint8 (a quarter of float32's bytes;
    within 0.5/255 of `eval_image`, exact for images already H x W)."""
    return tf.saturate_cast(tf.round(eval_image(data, image_shape) * 255.0), tf.uint8)


def train_image(data, image_shape, augment: bool, min_area: float = AUGMENT_MIN_AREA):
    """A random resized crop of `min_area`-100% of the image, flipped at random, with
    `augment`; else as evaluated."""
    if not augment:
        return eval_image(data, image_shape)
    height, width, channels = image_shape

    def window(size_hw):
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.concat([size_hw, [channels]], 0), tf.zeros([1, 0, 4]), min_object_covered=0.0,
            aspect_ratio_range=_ASPECT_RANGE, area_range=(min_area, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        return begin[:2], size[:2]

    def jpeg():
        begin, size = window(tf.io.extract_jpeg_shape(data)[:2])
        return tf.image.decode_and_crop_jpeg(data, tf.concat([begin, size], 0),
                                             channels=channels)

    def other():
        image = decode(data, channels)
        begin, size = window(tf.shape(image)[:2])
        return tf.slice(image, tf.concat([begin, [0]], 0), tf.concat([size, [channels]], 0))

    crop = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image = tf.image.resize(to_float(crop), [height, width])
    image = tf.image.random_flip_left_right(image)
    return tf.ensure_shape(image, image_shape)


def augmented_batch(batch, image_shape, min_area: float = AUGMENT_MIN_AREA):
    """`train_image`'s augmentation of a batch of decoded uint8 images (cached ones), in a few
    ops for the whole batch instead of several per image (which cost more than decoding a small
    image): for each image a random crop window drawn as `sample_distorted_bounding_box` draws
    it (the same `min_area`-100% area and aspect ranges, 10 attempts, else the whole image), cut from the H x W
    image and resized to H x W (`crop_and_resize`, bilinear), and flipped horizontally at random
    (a box whose right edge comes first: the flip costs nothing)."""
    height, width, _ = image_shape
    count = tf.shape(batch)[0]
    y0, x0, h, w = _random_windows(count, height, width, min_area)
    left, right = x0 / max(width - 1, 1), (x0 + w - 1) / max(width - 1, 1)
    flip = tf.random.uniform([count]) < 0.5
    boxes = tf.stack([y0 / max(height - 1, 1), tf.where(flip, right, left),
                      (y0 + h - 1) / max(height - 1, 1), tf.where(flip, left, right)], 1)
    # Floats in: crop_and_resize measured twice as fast on them as on uint8.
    crops = tf.image.crop_and_resize(to_float(batch), boxes, tf.range(count), [height, width])
    return tf.ensure_shape(crops, [None, *image_shape])


def _random_windows(count, height: int, width: int, min_area: float, attempts: int = 10):
    """(top, left, height, width), float32 [count] each: TensorFlow's
    sample_distorted_bounding_box algorithm for an H x W image and no boxes, vectorized over
    `count` images and `attempts` tries each (the first valid try wins, else the whole image)."""
    area = float(height * width)
    min_area, max_area = min_area * area, area
    ratio = tf.random.uniform([count, attempts], *_ASPECT_RANGE)
    low = tf.round(tf.sqrt(min_area / ratio))
    high = tf.round(tf.sqrt(max_area / ratio))
    high = tf.where(high * ratio > width, tf.floor((width + 0.5 - 1e-7) / ratio), high)
    high = tf.minimum(high, height)
    low = tf.minimum(low, high)
    h = low + tf.floor(tf.random.uniform([count, attempts]) * (high - low + 1))
    w = tf.round(h * ratio)
    valid = ((h * w >= min_area) & (h * w <= max_area) & (h >= 1) & (w >= 1) & (h <= height)
             & (w <= width))
    first = tf.argmax(tf.cast(valid, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(valid, axis=1)
    h = tf.where(found, tf.gather(h, first, batch_dims=1), float(height))
    w = tf.where(found, tf.gather(w, first, batch_dims=1), float(width))
    y0 = tf.floor(tf.random.uniform([count]) * (height - h + 1))
    x0 = tf.floor(tf.random.uniform([count]) * (width - w + 1))
    return y0, x0, h, w


def eval_images(encoded, image_shape):
    """A batch of encoded images [N] -> float32 [N, H, W, C] (the export's encoded_image)."""
    return tf.map_fn(lambda data: eval_image(data, image_shape), encoded,
                     fn_output_signature=tf.TensorSpec(image_shape, tf.float32))
