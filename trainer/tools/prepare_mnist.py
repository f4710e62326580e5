"""Convert MNIST-format idx files (MNIST, Fashion-MNIST, ...) to sharded TFRecords.

    python scripts/prepare_mnist.py --idx-dir ../shared/data/mnist --output-dir data/mnist

writes train-0000i-of-0000N.tfrecord[.gz] from train-*-ubyte(.gz) and eval-... from
t10k-*-ubyte(.gz). A gs:// --output-dir gets the shards uploaded in parallel; shards already there
with the same checksum are skipped, so an interrupted run can simply be repeated. Records use the trainer's schema (records.py): image = raw uint8 bytes,
label = int64, height/width/depth; `--schema classic` writes the old tutorials' float32
`image_raw` instead. Each shard is written under a temporary name and renamed when complete, so an
interrupted run never leaves a shard that looks finished.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import tempfile

import numpy as np


from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError
from trainer.records import LABEL, LEGACY_IMAGE, serialize_example

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
    """Writes contiguous shards; returns their paths."""
    import tensorflow as tf
    from tqdm import tqdm

    tf.io.gfile.makedirs(output_dir)
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    options = tf.io.TFRecordOptions(compression_type=compression)
    bounds = np.linspace(0, len(images), num_shards + 1).astype(int)
    paths = []
    with tqdm(total=len(images), desc=prefix, unit="rec", disable=not progress,
              file=sys.stderr) as bar:
        for shard in range(num_shards):
            path = os.path.join(output_dir, f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}")
            partial = f"{path}.partial"
            with tf.io.TFRecordWriter(partial, options) as writer:
                for i in range(bounds[shard], bounds[shard + 1]):
                    writer.write(_serialize(images[i], int(labels[i]), schema))
                    bar.update(1)
            tf.io.gfile.rename(partial, path, overwrite=True)
            paths.append(path)
    return paths


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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    compression = "GZIP" if args.compression == "gzip" else ""
    remote = args.output_dir.startswith("gs://")
    with tempfile.TemporaryDirectory() as staging:
        for split, shards, limit in (("train", args.train_shards, args.train_limit),
                                     ("eval", args.eval_shards, args.eval_limit)):
            images, labels = load_split(args.idx_dir, split)
            images, labels = images[:limit], labels[:limit]
            paths = write_shards(images, labels, staging if remote else args.output_dir,
                                 split, shards, compression, args.schema)
            skipped = 0
            if remote:
                from trainer.tools.gcs_upload import upload

                _, skipped = upload(paths, args.output_dir)
            note = f" ({skipped} already there)" if skipped else ""
            print(f"{split}: {len(images):,} records of "
                  f"{'x'.join(map(str, images.shape[1:]))} in {len(paths)} shard(s) under "
                  f"{args.output_dir}{note}")

if __name__ == "__main__":
    sys.exit(main())
