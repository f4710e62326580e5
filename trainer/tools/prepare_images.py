"""Convert images to sharded encoded-image TFRecords the trainer reads (local or gs://).

    python scripts/prepare_images.py --input photos/ --output-dir gs://bucket/flowers
    python scripts/prepare_images.py --input gs://bucket/flowers.csv --output-dir data/flowers
    python scripts/prepare_images.py --input export.jsonl --output-dir data/x --max-size 512
    python scripts/prepare_images.py --cifar cifar-10-batches-py --output-dir data/cifar10

--input is an image folder, a `PATH,LABEL` CSV or a Vertex image-classification JSONL
(trainer/data/manifests.py); --cifar the CIFAR-10/100 "python version" folder (pickled batches of
`data` and `labels`/`fine_labels`, read by trainer/tools/cifar_batches.py, which runs no code from
them). A folder is either ROOT/CLASS/image or split folders ROOT/SPLIT/CLASS/image, SPLIT one of
train, validation (or val, eval) and test. Splits come from those folders or from each item's
ml_use (training -> train, validation -> eval, test -> test); items without one go to eval with
probability --eval-fraction, decided by a hash of their path below --input, so a rerun (or the
same folder elsewhere, or copied to gs://) makes the same split.
Each split's shards (`train-00000-of-00004.tfrecord`, ...) hold records of
`image/encoded`, `image/format`, `image/class/label`, `image/class/text`, `image/height`,
`image/width`, in a fixed order; labels.txt (line i names class i, sorted) goes beside them.
--max-size shrinks larger images on write (aspect kept, re-encoded as JPEG). Everything is
written into a staging folder first and reaches --output-dir only when complete
(trainer/tools/dataset_output.py); a gs:// --output-dir gets the files uploaded in parallel,
skipping those already there unchanged.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from trainer import storage
from trainer.cli import OneLineParser, UsageError, run_cli
from trainer.data import labels as label_maps
from trainer.data import manifests
from trainer.errors import TrainerError, short_reason
from trainer.tools import cifar_batches, dataset_output

SPLITS = ("train", "eval", "test")
_SPLIT_OF_USE = {"training": "train", "validation": "eval", "test": "test"}
# A split folder's name -> the ml_use its images get.
_SPLIT_FOLDERS = {"train": "training", "validation": "validation", "val": "validation",
                  "eval": "validation", "test": "test"}
_READ_THREADS = 16
_READ_AHEAD = 4 * _READ_THREADS
DEFAULT_EVAL_FRACTION = 0.1


@dataclass(frozen=True)
class Example:
    """One image to write: its encoded bytes (None: read from `uri`), label name, split."""

    uri: str
    label: str
    split: str
    data: bytes | None = None


def _split_of(item: manifests.Item, eval_fraction: float, root: str) -> str:
    """The item's split: its own, else by a hash of its path below `root` (a folder's images
    keep their split wherever the folder is, local or copied to gs://)."""
    if item.ml_use:
        return _SPLIT_OF_USE[item.ml_use]
    key = item.uri[len(root):] if item.uri.startswith(root) else item.uri
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0 ** 64
    return "eval" if bucket < eval_fraction else "train"


def split_folders(root: str) -> dict[str, str]:
    """{split folder: ml_use} when ROOT holds split folders (ROOT/SPLIT/CLASS/image); {} when it
    is a folder of class folders. A folder named like a split that holds images itself is a
    class, as it always was."""
    import tensorflow as tf

    from trainer.data.image_files import IMAGE_SUFFIXES

    root = root.rstrip("/")

    def subfolders(path: str) -> list[str]:
        try:
            entries = tf.io.gfile.listdir(path)
        except tf.errors.OpError as err:
            raise TrainerError(f"--input: cannot list {path} ({short_reason(err)})") from None
        if any(e.lower().endswith(IMAGE_SUFFIXES) for e in entries):
            return []
        return sorted(e.rstrip("/") for e in entries if tf.io.gfile.isdir(storage.join(path, e)))

    folders = subfolders(root)
    named = [f for f in folders if f.lower() in _SPLIT_FOLDERS]
    if not named or not all(subfolders(storage.join(root, f)) for f in named):
        return {}
    others = [f for f in folders if f not in named]
    if others:
        raise TrainerError(f"--input: {root} mixes split folders ({', '.join(named)}) with other "
                           f"folders ({', '.join(others)}); expected ROOT/SPLIT/CLASS/image (SPLIT "
                           f"one of {', '.join(_SPLIT_FOLDERS)}) or ROOT/CLASS/image")
    uses = {f: _SPLIT_FOLDERS[f.lower()] for f in named}
    for use in set(uses.values()):
        same = [f for f in named if uses[f] == use]
        if len(same) > 1:
            raise TrainerError(f"--input: {root} has {' and '.join(same)}, two folders for the "
                               f"{_SPLIT_OF_USE[use]} split; expected one")
    return dict(sorted(uses.items(), key=lambda kv: SPLITS.index(_SPLIT_OF_USE[kv[1]])))


def describe_split_folders(root: str, folders: dict[str, str]) -> str:
    return f"split folders of {root.rstrip('/')}: " + ", ".join(
        f"{folder} -> {_SPLIT_OF_USE[use]}" for folder, use in folders.items())


def list_images(source: str, eval_fraction: float | None,
                folders: dict[str, str] | None = None) -> list[Example]:
    """The images of a folder (its split `folders`, if any) or manifest, each with its split.
    `eval_fraction` None means the default; given, some image must lack a split. `folders`
    None: found here (`split_folders`)."""
    from trainer.data import image_files

    if folders is None:
        folders = split_folders(source) if image_files.is_folder(source) else {}
    if folders:
        items = []
        for folder, use in folders.items():
            items += [dataclasses.replace(item, ml_use=use) for item in
                      image_files.folder_items(storage.join(source.rstrip("/"), folder),
                                               "--input")]
    elif image_files.is_folder(source):
        items = image_files.folder_items(source, "--input")
    else:
        items = manifests.parse(image_files.read_text(source, "--input"), source, "--input")
    if eval_fraction is not None and all(item.ml_use for item in items):
        raise UsageError(f"--eval-fraction: every image of {source} has its split already "
                         "(split folders or ml_use); the fraction splits only images without one")
    fraction = DEFAULT_EVAL_FRACTION if eval_fraction is None else eval_fraction
    root = source.rstrip("/") + "/"
    return [Example(item.uri, item.label, _split_of(item, fraction, root)) for item in items]


def cifar_examples(folder: str) -> list[Example]:
    """Every CIFAR image as PNG bytes with its class name (train from data batches, eval from
    the test batch)."""
    import tensorflow as tf

    names, batches = cifar_batches.read(folder)
    return [Example(f"{batch.path}#{index}", names[label], batch.split,
                    tf.io.encode_png(image).numpy())
            for batch in batches
            for index, (image, label) in enumerate(zip(batch.pixels, batch.labels))]


def count_table(examples: list[Example], class_names: list[str]) -> list[str]:
    """Images per class (rows) and split (columns), with a total row."""
    counts = collections.Counter((e.label, e.split) for e in examples)
    splits = [s for s in SPLITS if any(e.split == s for e in examples)]
    rows = [["class", *splits]]
    rows += [[name, *(f"{counts[name, s]:,}" for s in splits)] for name in class_names]
    rows.append(["all", *(f"{sum(counts[n, s] for n in class_names):,}" for s in splits)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:],
                                                                             widths[1:])]).rstrip()
            for row in rows]


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


def _read_ahead(pool: ThreadPoolExecutor, examples: list[Example]):
    """The bytes of each example in order, read on the pool at most _READ_AHEAD ahead of the
    writer (pool.map would read every file into memory before the first is written)."""
    pending = collections.deque()
    for example in examples:
        pending.append(pool.submit(_read, example))
        if len(pending) >= _READ_AHEAD:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def write_split(examples: list[Example], class_names: list[str], output_dir: str, split: str,
                num_shards: int, max_size: int | None, progress: bool = True) -> list[str]:
    """Writes one split's shards in a fixed order (sorted by path hash, so classes mix);
    returns their paths."""
    index = {name: i for i, name in enumerate(class_names)}
    ordered = sorted(examples, key=lambda e: hashlib.sha256(e.uri.encode()).digest())

    def records():
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            for example, data in zip(ordered, _read_ahead(pool, ordered)):
                stored, fmt, height, width = encode(data, example.uri, max_size)
                yield serialize(stored, fmt, height, width, index[example.label], example.label)

    return dataset_output.write_shards(records(), len(ordered), output_dir, split, num_shards,
                                       progress=progress, unit="images")


def convert(examples: list[Example], class_names: list[str], output_dir: str,
            shards: dict[str, int], max_size: int | None, progress: bool = True) -> list[str]:
    """Writes every split and labels.txt, staged, then moves or uploads them into `output_dir`;
    returns lines describing what was written."""
    with dataset_output.staging(output_dir) as staged:
        with open(os.path.join(staged, label_maps.FILE_NAME), "w", encoding="utf-8") as f:
            f.write(label_maps.text_of(class_names))
        written = {split: write_split([e for e in examples if e.split == split], class_names,
                                      staged, split, shards[split], max_size, progress)
                   for split in SPLITS if any(e.split == split for e in examples)}
        names = [os.path.basename(p) for paths in written.values() for p in paths]
        published = dataset_output.publish(staged, names + [label_maps.FILE_NAME], output_dir,
                                           progress)
    counts = ", ".join(f"{len(paths)} {split}" for split, paths in written.items())
    lines = [f"written under {output_dir}: {counts} shard(s) and {label_maps.FILE_NAME}"]
    if published.unchanged:
        lines.append(f"({len(published.unchanged)} file(s) already there unchanged)")
    return lines + published.lines()


def main(argv=None) -> int:
    return run_cli(lambda: _prepare(argv))


def _prepare(argv) -> None:
    p = OneLineParser(prog="vertex-trainer prepare", description=__doc__.split("\n")[0],
                      allow_abbrev=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="image folder ROOT/CLASS/x.jpg or ROOT/SPLIT/CLASS/x.jpg "
                                        "(SPLIT: train, validation, val, eval, test), CSV or "
                                        "Vertex JSONL (local or gs://)")
    source.add_argument("--cifar", help="folder of the CIFAR-10/100 python-version batches")
    p.add_argument("--output-dir", required=True, help="a local folder or gs://bucket/path")
    p.add_argument("--train-shards", type=int, default=8)
    p.add_argument("--eval-shards", type=int, default=2)
    p.add_argument("--test-shards", type=int, default=2)
    p.add_argument("--eval-fraction", type=float,
                   help="share of the images without a split (no split folder, no ml_use) that "
                        f"go to eval (default {DEFAULT_EVAL_FRACTION})")
    p.add_argument("--max-size", type=int, help="shrink images whose longer side exceeds this")
    args = p.parse_args(argv)
    for name in ("train_shards", "eval_shards", "test_shards", "max_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.eval_fraction is not None and not 0.0 <= args.eval_fraction < 1.0:
        p.error(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    if args.cifar and args.eval_fraction is not None:
        p.error("--eval-fraction does not apply to --cifar (its test batch is the eval split)")
    # Local inputs first (no network): a missing one is reported before missing credentials
    # or a missing bucket of a gs:// --output-dir. CIFAR's batches are decoded after the check.
    if args.cifar:
        cifar_batches.find(args.cifar)
    else:
        from trainer.data import image_files

        folders = split_folders(args.input) if image_files.is_folder(args.input) else {}
        if folders:
            print(describe_split_folders(args.input, folders))
        examples = list_images(args.input, args.eval_fraction, folders)
    dataset_output.check(args.output_dir)
    if args.cifar:
        examples = cifar_examples(args.cifar)
    class_names = label_maps.build(e.label for e in examples)
    if len(class_names) < 2:
        raise TrainerError(f"the input has {len(class_names)} class(es); expected at least 2")
    print("images per split and class:")
    for line in count_table(examples, class_names):
        print(line)
    shards = {"train": args.train_shards, "eval": args.eval_shards, "test": args.test_shards}
    for line in convert(examples, class_names, args.output_dir, shards, args.max_size):
        print(line)


if __name__ == "__main__":
    sys.exit(main())
