"""Convert MNIST-format idx files (MNIST, Fashion-MNIST, ...) to sharded TFRecords.

    python scripts/prepare_mnist.py --idx-dir ../shared/data/mnist --output-dir data/mnist

writes train-0000i-of-0000N.tfrecord[.gz] from train-*-ubyte(.gz) and eval-... from
t10k-*-ubyte(.gz). Records use the trainer's schema (records.py): image = raw uint8 bytes,
label = int64, height/width/depth; `--schema classic` writes the old tutorials' float32
`image_raw` instead. Both splits are read and written in full into a staging folder before any
file reaches --output-dir (trainer/tools/dataset_output.py): a run that fails part-way leaves no
shard there. A gs:// --output-dir then gets the shards uploaded in parallel; shards already there
with the same checksum are skipped, so an interrupted upload can simply be repeated.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys

import numpy as np

from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError
from trainer.records import LABEL, LEGACY_IMAGE, serialize_example
from trainer.tools import dataset_output

_SPLITS = {"train": "train", "eval": "t10k"}
_IDX_TYPES = {0x08: np.uint8}


def read_idx(path: str) -> np.ndarray:
    """An idx file (optionally gzip-compressed) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise TrainerError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise TrainerError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise TrainerError(f"{path}: holds {body.size} values; its header promises "
                           f"{'x'.join(map(str, dims))}")
    return body.reshape(dims)


def _find(idx_dir: str, stem: str) -> str:
    if not os.path.exists(idx_dir):
        raise TrainerError(f"--idx-dir: {idx_dir} does not exist")
    for name in (f"{stem}.gz", stem):
        path = os.path.join(idx_dir, name)
        if os.path.exists(path):
            return path
    raise TrainerError(f"--idx-dir: {os.path.join(idx_dir, stem)}(.gz) not found")


def load_split(idx_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, H, W, C] uint8, labels [N]) of 'train' or 'eval'."""
    prefix = _SPLITS[split]
    images = read_idx(_find(idx_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(idx_dir, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise TrainerError(f"--idx-dir: {prefix} images {images.shape} and labels {labels.shape} "
                           "do not pair up")
    return images, labels


def _serialize(image: np.ndarray, label: int, schema: str) -> bytes:
    if schema == "classic":
        import tensorflow as tf

        features = {
            LEGACY_IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[(image.astype(np.float32) / 255.0).tobytes()])),
            LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
            deterministic=True)
    height, width, depth = image.shape
    return serialize_example(image.tobytes(), label, height, width, depth)


def write_shards(images: np.ndarray, labels: np.ndarray, output_dir: str, prefix: str,
                 num_shards: int, compression: str = "GZIP", schema: str = "current",
                 progress: bool = True) -> list[str]:
    """Writes contiguous shards straight into `output_dir`; returns their paths."""
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    records = (_serialize(images[i], int(labels[i]), schema) for i in range(len(images)))
    return dataset_output.write_shards(records, len(images), output_dir, prefix, num_shards,
                                       suffix, compression, progress)


def main(argv=None) -> int:
    return run_cli(lambda: _prepare(argv))


def _prepare(argv) -> None:
    p = OneLineParser(prog="vertex-trainer prepare-mnist", description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--idx-dir", required=True, help="folder with the idx(.gz) files")
    p.add_argument("--output-dir", required=True, help="a local folder or gs://bucket/path")
    p.add_argument("--train-shards", type=int, default=8)
    p.add_argument("--eval-shards", type=int, default=2)
    p.add_argument("--train-limit", type=int, help="first N training examples only")
    p.add_argument("--eval-limit", type=int, help="first N eval examples only")
    p.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    p.add_argument("--schema", choices=("current", "classic"), default="current",
                   help="classic: float32 `image_raw`, as the old TF tutorials wrote")
    args = p.parse_args(argv)
    for name in ("train_shards", "eval_shards", "train_limit", "eval_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    compression = "GZIP" if args.compression == "gzip" else ""
    splits = {}
    for split, limit in (("train", args.train_limit), ("eval", args.eval_limit)):
        images, labels = load_split(args.idx_dir, split)
        splits[split] = images[:limit], labels[:limit]
    # After the local files (a second or two, no network): a missing --idx-dir is reported
    # before missing credentials or a missing bucket, not after they are fixed.
    dataset_output.check(args.output_dir)
    shards = {"train": args.train_shards, "eval": args.eval_shards}
    with dataset_output.staging(args.output_dir) as staged:
        written = {split: write_shards(images, labels, staged, split, shards[split], compression,
                                       args.schema)
                   for split, (images, labels) in splits.items()}
        names = [os.path.basename(p) for paths in written.values() for p in paths]
        published = dataset_output.publish(staged, names, args.output_dir)
    for split, (images, _) in splits.items():
        unchanged = len(set(map(os.path.basename, written[split])) & set(published.unchanged))
        note = f" ({unchanged} already there)" if unchanged else ""
        print(f"{split}: {len(images):,} records of {'x'.join(map(str, images.shape[1:]))} in "
              f"{len(written[split])} shard(s) under {args.output_dir}{note}")
    for line in published.lines():
        print(line)


if __name__ == "__main__":
    sys.exit(main())
