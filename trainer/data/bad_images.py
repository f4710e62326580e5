"""Which image broke the pipeline: a cold scan, run only after a read or decode failure.

The fast input path decodes images in a plain parallel map, so a bad image surfaces as a bare op
error that names no image. `explain` recognises such errors (by the failing op), then decodes
the source again in its evaluation order with errors dropped: the first index missing from the
output is the bad image. The scan stops after `SCAN_SECONDS`; the error then says how far it got.
An image refused by the resize-to-cover bound (trainer/image_bounds.py) is looked for the same
way, with that check in the scan.
"""

from __future__ import annotations

import re
import time

import numpy as np
import tensorflow as tf

from trainer import image_bounds
from trainer.data import images
from trainer.errors import TrainerError, short_reason

SCAN_SECONDS = 60.0
SCAN_BATCH = 256

# The ops of reading and decoding an image, as TensorFlow names the failing node.
_IMAGE_OP = re.compile(r"\{\{node [^}]*\b(ReadFile|ExtractJpegShape|Decode(Image|Jpeg|AndCropJpeg|"
                       rf"Png|Gif|Bmp)|{images.COVER_CHECK}/[^}}]*Assert)\}}\}}")
_NOT_AN_IMAGE = "is corrupt, truncated or not a JPEG/PNG/GIF/BMP image"


def is_image_error(err: Exception) -> bool:
    return isinstance(err, tf.errors.OpError) and bool(_IMAGE_OP.search(err.message or ""))


def explain(err: tf.errors.OpError, source) -> TrainerError:
    """A one-line error naming the first image of `source` that fails, or how far the scan got."""
    started = time.monotonic()
    bounded = images.COVER_CHECK in (err.message or "")
    index, checked = _first_failure(source, started + SCAN_SECONDS, bounded)
    hint = f"; {source.terms.skip_hint}" if source.terms.skip_hint else ""
    if index is not None:
        return TrainerError(f"{source.flag}: {_problem(source, index)}{hint}")
    reason = short_reason(err)
    if checked is None:
        return TrainerError(f"{source.flag}: an image could not be read or decoded ({reason}); "
                            f"every image reads and decodes when checked again{hint}")
    return TrainerError(
        f"{source.flag}: an image could not be read or decoded ({reason}); the first "
        f"{checked:,} images (in evaluation order, checked for {time.monotonic() - started:.0f} s)"
        f" decode, the bad one is further on{hint}")


def _units(source):
    return source.units(training=False, shuffle_buffer=0, seed=None, input_context=None)


def _encoded(source, unit):
    return source.read(source.parse_one(*unit)[0])


def _first_failure(source, deadline: float, bounded: bool) -> tuple[int | None, int | None]:
    """(index of the first failing unit, None) or (None, units checked before the deadline);
    (None, None) when all decode (and, `bounded`, may be resized to cover the model's input)."""
    shape = source.image_shape

    def check(index, unit):
        data = _encoded(source, unit)
        # A size is returned so that the decode runs: tf.data skips a function that passes
        # its input through.
        return index, (images.covering_size(data, shape) if bounded
                       else tf.shape(images.decode(data, shape[2]))[:2])

    decoded = _units(source).enumerate().map(
        check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    expected = 0
    for batch, _ in decoded.batch(SCAN_BATCH).prefetch(1):
        batch = batch.numpy()
        gaps = np.flatnonzero(batch != np.arange(expected, expected + len(batch)))
        if gaps.size:
            return expected + int(gaps[0]), None
        expected += len(batch)
        if time.monotonic() > deadline:
            return None, expected
    # Every unit up to `expected` decoded; one more unit means the last one failed.
    if next(iter(_units(source).skip(expected).take(1)), None) is not None:
        return expected, None
    return None, None


def _problem(source, index: int) -> str:
    """Why the unit at `index` fails, read and decoded once more to get the decoder's reason."""
    data, _, where = source.parse_one(*next(iter(_units(source).skip(index).take(1))))
    subject = f"{where.numpy().decode('utf-8', 'replace')}: {source.name_image(data)}"
    try:
        image = images.decode(source.read(data), source.image_shape[2])
    except tf.errors.NotFoundError:
        return f"{subject} does not exist"
    except tf.errors.OpError as err:
        return f"{subject} {_NOT_AN_IMAGE} ({short_reason(err)})"
    too_large = image_bounds.cover_problem(*image.shape[:2], source.image_shape[:2])
    if too_large:
        return f"{subject} cannot be resized for the model: {too_large}"
    return f"{subject} could not be read or decoded"
