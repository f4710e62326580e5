"""Convert images to sharded encoded-image TFRecords the trainer reads (local or gs://).

    python scripts/prepare_images.py --input photos/ --output-dir gs://bucket/flowers
    python scripts/prepare_images.py --input gs://bucket/flowers.csv --output-dir data/flowers
    python scripts/prepare_images.py --input export.jsonl --output-dir data/x --max-size 512
    python scripts/prepare_images.py --cifar cifar-10-batches-py --output-dir data/cifar10

--input is an image folder (ROOT/CLASS/image.jpg), a `PATH,LABEL` CSV or a Vertex
image-classification JSONL (trainer/data/manifests.py); --cifar the CIFAR-10/100 "python version"
folder (pickled batches of `data` and `labels`/`fine_labels`). Splits come from each item's
ml_use (training -> train, validation -> eval, test -> test); items without one go to eval with
probability --eval-fraction, decided by a hash of their path, so a rerun makes the same split.
Each split's shards (`train-00000-of-00004.tfrecord`, ...) hold records of
`image/encoded`, `image/format`, `image/class/label`, `image/class/text`, `image/height`,
`image/width`, in a fixed order; labels.txt (line i names class i, sorted) goes beside them.
--max-size shrinks larger images on write (aspect kept, re-encoded as JPEG). A gs://
--output-dir gets the shards uploaded in parallel, skipping those already there unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


from trainer.cli import OneLineParser, run_cli
from trainer.data import labels as label_maps
from trainer.data import manifests
from trainer.errors import TrainerError, short_reason

_SPLITS = {"training": "train", "validation": "eval", "test": "test"}
_READ_THREADS = 16


@dataclass(frozen=True)
class Example:
    """One image to write: its encoded bytes (None: read from `uri`), label name, split."""

    uri: str
    label: str
    split: str
    data: bytes | None = None


def _split_of(item: manifests.Item, eval_fraction: float) -> str:
    if item.ml_use:
        return _SPLITS[item.ml_use]
    bucket = int.from_bytes(hashlib.sha256(item.uri.encode()).digest()[:8], "big") / 2.0 ** 64
    return "eval" if bucket < eval_fraction else "train"


def list_images(source: str, eval_fraction: float) -> list[Example]:
    """The images of a folder or manifest, each with its split."""
    from trainer.data import image_files

    if image_files.is_folder(source):
        items = image_files.folder_items(source, "--input")
    else:
        items = manifests.parse(image_files.read_text(source, "--input"), source, "--input")
    return [Example(item.uri, item.label, _split_of(item, eval_fraction)) for item in items]


def _cifar_batches(folder: str) -> tuple[list[tuple[str, str]], str, str]:
    """([(batch file, split)], label key, names key) for CIFAR-10 or CIFAR-100."""
    if os.path.exists(os.path.join(folder, "data_batch_1")):
        train = [(f"data_batch_{i}", "train") for i in range(1, 6)]
        return [(os.path.join(folder, n), s) for n, s in train + [("test_batch", "eval")]], \
            "labels", os.path.join(folder, "batches.meta")
    if os.path.exists(os.path.join(folder, "train")):
        return [(os.path.join(folder, "train"), "train"), (os.path.join(folder, "test"), "eval")], \
            "fine_labels", os.path.join(folder, "meta")
    raise TrainerError(f"--cifar: {folder} holds neither CIFAR-10 (data_batch_1..5, test_batch) "
                       "nor CIFAR-100 (train, test) python batches")


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise TrainerError(f"--cifar: cannot read {path} ({err})") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cifar_examples(folder: str) -> list[Example]:
    """Every CIFAR image as PNG bytes with its class name (train from data batches, eval from
    the test batch)."""
    import tensorflow as tf

    batches, label_key, meta_path = _cifar_batches(folder)
    meta = {_text(k): v for k, v in _unpickle(meta_path).items()}
    names_key = "fine_label_names" if label_key == "fine_labels" else "label_names"
    names = [_text(n) for n in meta.get(names_key, [])]
    examples = []
    for path, split in batches:
        batch = {_text(k): v for k, v in _unpickle(path).items()}
        if "data" not in batch or label_key not in batch:
            raise TrainerError(f"--cifar: {path} lacks 'data' or {label_key!r}")
        pixels = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for index, (image, label) in enumerate(zip(pixels, batch[label_key])):
            name = names[label] if label < len(names) else str(label)
            examples.append(Example(f"{path}#{index}", name, split,
                                    tf.io.encode_png(image).numpy()))
    return examples


def _format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"GIF":
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return ""


def encode(data: bytes, where: str, max_size: int | None) -> tuple[bytes, str, int, int]:
    """(bytes to store, format, height, width); shrinks to max_size (re-encoded as JPEG)."""
    import tensorflow as tf

    fmt = _format(data)
    try:
        if not fmt:
            raise ValueError("not a JPEG, PNG, GIF or BMP image")
        image = tf.io.decode_image(data, channels=3 if fmt in ("gif", "bmp") else 0,
                                   expand_animations=False)
    except (tf.errors.OpError, ValueError) as err:
        raise TrainerError(f"{where}: cannot decode the image ({short_reason(err)})") from None
    height, width = int(image.shape[0]), int(image.shape[1])
    if max_size and max(height, width) > max_size:
        scale = max_size / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        resized = tf.image.resize(image, [height, width], antialias=True)
        data = tf.io.encode_jpeg(tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8),
                                 quality=95).numpy()
        fmt = "jpeg"
    return data, fmt, height, width


def serialize(data: bytes, fmt: str, height: int, width: int, label: int, text: str) -> bytes:
    from tensorflow.core.example import example_pb2, feature_pb2

    def ints(value):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))

    def raw(value: bytes):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    features = {"image/encoded": raw(data), "image/format": raw(fmt.encode()),
                "image/class/label": ints(label), "image/class/text": raw(text.encode()),
                "image/height": ints(height), "image/width": ints(width)}
    example = example_pb2.Example(features=feature_pb2.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def _read(example: Example) -> bytes:
    import tensorflow as tf

    if example.data is not None:
        return example.data
    try:
        with tf.io.gfile.GFile(example.uri, "rb") as f:
            return f.read()
    except tf.errors.OpError as err:
        raise TrainerError(f"{example.uri}: cannot read ({short_reason(err)})") from None


def write_split(examples: list[Example], class_names: list[str], output_dir: str, split: str,
                num_shards: int, max_size: int | None, progress: bool = True) -> list[str]:
    """Writes one split's shards in a fixed order (sorted by path hash, so classes mix);
    returns their paths. Each shard is written under a temporary name, then renamed."""
    import tensorflow as tf
    from tqdm import tqdm

    index = {name: i for i, name in enumerate(class_names)}
    ordered = sorted(examples, key=lambda e: hashlib.sha256(e.uri.encode()).digest())
    num_shards = max(1, min(num_shards, len(ordered)))
    bounds = np.linspace(0, len(ordered), num_shards + 1).astype(int)
    tf.io.gfile.makedirs(output_dir)
    paths = []
    with ThreadPoolExecutor(_READ_THREADS) as pool, \
            tqdm(total=len(ordered), desc=split, unit="img", disable=not progress,
                 file=sys.stderr) as bar:
        for shard in range(num_shards):
            path = os.path.join(output_dir, f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord")
            chunk = ordered[bounds[shard]:bounds[shard + 1]]
            with tf.io.TFRecordWriter(f"{path}.partial") as writer:
                for example, data in zip(chunk, pool.map(_read, chunk)):
                    stored, fmt, height, width = encode(data, example.uri, max_size)
                    writer.write(serialize(stored, fmt, height, width, index[example.label],
                                           example.label))
                    bar.update(1)
            tf.io.gfile.rename(f"{path}.partial", path, overwrite=True)
            paths.append(path)
    return paths


def convert(examples: list[Example], output_dir: str, shards: dict[str, int],
            max_size: int | None, progress: bool = True) -> list[str]:
    """Writes every split and labels.txt; returns lines describing what was written."""
    class_names = label_maps.build(e.label for e in examples)
    if len(class_names) < 2:
        raise TrainerError(f"the input has {len(class_names)} class(es); expected at least 2")
    remote = output_dir.startswith("gs://")
    lines = []
    with tempfile.TemporaryDirectory() as staging:
        local_dir = staging if remote else output_dir
        os.makedirs(local_dir, exist_ok=True)
        labels_path = os.path.join(local_dir, label_maps.FILE_NAME)
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write(label_maps.text_of(class_names))
        paths = [labels_path]
        for split in ("train", "eval", "test"):
            chosen = [e for e in examples if e.split == split]
            if not chosen:
                continue
            paths += write_split(chosen, class_names, local_dir, split, shards[split], max_size,
                                 progress)
            lines.append(f"{split}: {len(chosen):,} images of {len(class_names)} classes")
        if remote:
            from trainer.tools.gcs_upload import upload

            _, skipped = upload(paths, output_dir, progress=progress)
            if skipped:
                lines.append(f"({skipped} file(s) already there unchanged)")
    lines.append(f"written under {output_dir} with {label_maps.FILE_NAME}")
    return lines


def main(argv=None) -> int:
    return run_cli(lambda: _prepare(argv))


def _prepare(argv) -> None:
    p = OneLineParser(prog="vertex-trainer prepare", description=__doc__.split("\n")[0], allow_abbrev=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="image folder ROOT/CLASS/x.jpg, CSV or Vertex JSONL "
                                        "(local or gs://)")
    source.add_argument("--cifar", help="folder of the CIFAR-10/100 python-version batches")
    p.add_argument("--output-dir", required=True, help="a local folder or gs://bucket/path")
    p.add_argument("--train-shards", type=int, default=8)
    p.add_argument("--eval-shards", type=int, default=2)
    p.add_argument("--test-shards", type=int, default=2)
    p.add_argument("--eval-fraction", type=float, default=0.1,
                   help="share of items without ml_use that go to eval")
    p.add_argument("--max-size", type=int, help="shrink images whose longer side exceeds this")
    args = p.parse_args(argv)
    for name in ("train_shards", "eval_shards", "test_shards", "max_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0.0 <= args.eval_fraction < 1.0:
        p.error(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    examples = (cifar_examples(args.cifar) if args.cifar
                else list_images(args.input, args.eval_fraction))
    shards = {"train": args.train_shards, "eval": args.eval_shards, "test": args.test_shards}
    for line in convert(examples, args.output_dir, shards, args.max_size):
        print(line)


if __name__ == "__main__":
    sys.exit(main())
