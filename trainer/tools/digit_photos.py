"""`vertex-trainer sample-photos OUT_DIR`: MNIST digits as a folder of small photos.

PNG and JPEG files of 20-60 px (rarely square), every third one RGB with a colour tint, in class
folders named after the digits: what a user's folder of small photos looks like. The command
writes the bundled MNIST sample that way (OUT_DIR/train/CLASS/*, OUT_DIR/eval/CLASS/*); the
photo benchmarks and the tests write them too.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

import numpy as np

from trainer.cli import OneLineParser, UsageError, run_cli, usage_errors

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


def balanced(source, limit: int | None) -> list[tuple[int, np.ndarray]]:
    """(label, uint8 28 x 28 digit) of `source`'s records taken in turn from each class, each
    class in record order: the first `limit` of that order, or all. The first `limit` records
    as they lie may miss a class (MNIST's first 40 training digits hold no 8), and a split
    without a class the model knows fails evaluation."""
    from trainer import data

    per_class = None if limit is None else -(-limit // len(NAMES))
    kept: dict[int, list[np.ndarray]] = {label: [] for label in range(len(NAMES))}
    for images, labels in data.make_dataset(source, batch_size=1000, training=False):
        for image, label in zip(images.numpy(), labels.numpy()):
            kept[int(label)].append(np.clip(np.rint(image[..., 0] * 255), 0, 255).astype(np.uint8))
        if per_class is not None and all(len(digits) >= per_class for digits in kept.values()):
            break
    order = [(label, digits[rank]) for rank in range(max(map(len, kept.values())))
             for label, digits in kept.items() if rank < len(digits)]
    return order[:limit]


def write_folder(patterns: str, root: str, limit: int | None = None, seed: int = 0) -> list[str]:
    """ROOT/<digit name>/<n>.png|jpg from raw MNIST records (`limit` of them taken in turn from
    each digit, or all), PNG and JPEG alternating; returns the paths written, in order."""
    from trainer import data

    source = data.inspect_input(tuple(patterns.split(",")), "--train-files", (28, 28, 1), 10)
    rng = np.random.default_rng(seed)
    written = []
    for index, (label, digit) in enumerate(balanced(source, limit)):
        fmt = "png" if index % 2 else "jpg"
        path = os.path.join(root, NAMES[label], f"{index:05d}.{fmt}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(photo(digit, rng, fmt, colour=index % 3 == 0))
        written.append(path)
    return written


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="vertex-trainer sample-photos", allow_abbrev=False,
                      description="Write digits of the bundled MNIST sample as a folder of "
                                  "small PNG/JPEG photos: OUT_DIR/train/CLASS/* and "
                                  "OUT_DIR/eval/CLASS/*, CLASS the digit's name (zero ... nine), "
                                  "every digit in each.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="a new or empty folder")
    p.add_argument("--count", type=int, default=1000,
                   help="training photos, taken in turn from each digit (default 1,000; at most "
                        "the sample's 10,000)")
    p.add_argument("--eval-count", type=int,
                   help="held-out photos from the sample's eval split (default: a fifth of "
                        "--count, at least 10; at most 2,000)")
    p.add_argument("--seed", type=int, default=0,
                   help="the photos' sizes and tints: the same seed writes the same files")
    return p


def main(argv=None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        eval_count = max(args.count // 5, 10) if args.eval_count is None else args.eval_count
        for flag, value in (("--count", args.count), ("--eval-count", eval_count)):
            if value < len(NAMES):
                raise UsageError(f"{flag} must be at least {len(NAMES)} (a photo of each digit), "
                                 f"got {value}")
        if args.seed < 0:
            raise UsageError(f"--seed must be non-negative, got {args.seed}")
        out = os.path.abspath(args.out_dir)
        if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
            what = "is not empty" if os.path.isdir(out) else "is a file"
            raise UsageError(f"OUT_DIR {args.out_dir} {what}; sample-photos writes into a new "
                             "or empty folder")
        return write_sample(out, args.count, eval_count, args.seed)

    return run_cli(body)


def write_sample(out: str, count: int, eval_count: int, seed: int) -> int:
    from trainer import data
    from trainer.config import SAMPLE_EVAL_FILES, SAMPLE_TRAIN_FILES

    splits = {"train": (SAMPLE_TRAIN_FILES, count, "--count"),
              "eval": (SAMPLE_EVAL_FILES, eval_count, "--eval-count")}
    with usage_errors():
        for pattern, wanted, flag in splits.values():
            size = data.inspect_input((pattern,), flag, (28, 28, 1), 10).size
            if wanted > size:
                raise UsageError(f"{flag} {wanted:,}: the bundled sample holds {size:,} digits "
                                 "for this split")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    # Written beside OUT_DIR and moved in whole: an interrupted run leaves no half folder that a
    # rerun would refuse or a training would take for the sample.
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        written = {split: write_folder(pattern, os.path.join(staging, split), wanted,
                                       seed + index)
                   for index, (split, (pattern, wanted, _)) in enumerate(splits.items())}
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for split, paths in written.items():
        per_class = [sum(os.path.basename(os.path.dirname(p)) == name for p in paths)
                     for name in NAMES]
        each = (f"{min(per_class):,}" if min(per_class) == max(per_class)
                else f"{min(per_class):,}-{max(per_class):,}")
        print(f"{split}: {len(paths):,} photos ({each} of each digit) in "
              f"{os.path.join(out, split)}")
    held_out = next(p for p in written["eval"] if p.endswith(".png"))
    print("PNG and JPEG, 20-60 px a side, every third RGB with a tint; a held-out photo to send "
          f"to a server: {held_out.replace(staging, out, 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
