"""What resizing an image to cover the model's input costs, decided before anything is decoded.

Evaluation and serving resize an image to cover H x W with its aspect ratio kept, then crop the
centre (trainer/data/images.py). The intermediate tensor grows with the aspect ratio, not with
the file: a 1 x 990,000 grey PNG of 2 KB, under any pixel cap, covers 28 x 28 as
27,720,000 x 28 floats (3.1 GB). The rule here refuses an image whose covering tensor would hold
more than `MAX_COVER_FACTOR` times the model's H x W pixels, i.e. whose aspect ratio is more than
that many times the model's (a square model takes 1:64 up to 64:1). Pure Python and NumPy.
"""

from __future__ import annotations

import numpy as np

MAX_COVER_FACTOR = 64


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The size an image of `height` x `width` is resized to so that it covers `target`, in the
    float32 arithmetic of trainer/data/images.py (so it is also the exact size served)."""
    size = np.array([height, width], np.float32)
    goal = np.array(target, np.float32)
    scale = (goal / size).max()
    covering = np.ceil(size * scale - np.float32(1e-3)).astype(np.int64)
    return (max(int(covering[0]), target[0]), max(int(covering[1]), target[1]))


def cover_problem(height: int, width: int, target: tuple[int, int]) -> str | None:
    """Why an image of this size may not be resized to cover `target`, or None if it may."""
    if height <= 0 or width <= 0:
        return f"the image is {width} x {height} pixels"
    limit = MAX_COVER_FACTOR * target[0] * target[1]
    # The exact size served, as trainer/data/images.py checks it: both refuse the same images.
    cover_height, cover_width = cover_size(height, width, target)
    if cover_height * cover_width <= limit:
        return None
    return (f"its {width:,} x {height:,} pixels would be resized to {cover_width:,} x "
            f"{cover_height:,} to cover the model's {target[1]} x {target[0]}; at most "
            f"{MAX_COVER_FACTOR} x {target[1]} x {target[0]} = {limit:,} pixels (an aspect ratio "
            f"up to {MAX_COVER_FACTOR} times the model's)")
