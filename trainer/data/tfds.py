"""Source: a dataset folder prepared by TensorFlow Datasets (~/tensorflow_datasets/NAME/VERSION).

TFDS writes `dataset_info.json` (the splits, each with its shards' record counts),
`features.json` (here: one Image feature, stored encoded, and one ClassLabel), `LABEL.labels.txt`
(the class names, when the dataset has them) and shards `NAME-SPLIT.tfrecord-00000-of-00004`.
Given the folder, each flag reads its own split: --train-files `train`, --eval-files `validation`
(`test` when the dataset has none, as MNIST and CIFAR-10 have none), --test-files `test`. Shards
given as files are read as they are. The records are encoded-image records under the dataset's
own feature names; the class names come with the dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from trainer import storage
from trainer.data import encoded_records, labels, text
from trainer.data.source import Classes, Detector, Probe, Request
from trainer.errors import TrainerError

INFO = "dataset_info.json"
FEATURES = "features.json"
# ml_use split -> the TFDS splits it reads, the first one the dataset has
_SPLITS = {"training": ("train",), "validation": ("validation", "test"), "test": ("test",)}
_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"  # TFDS's default file names


@dataclass(frozen=True)
class Layout:
    """What dataset_info.json and features.json say, for an image-classification dataset."""

    name: str
    version: str
    shards: dict[str, tuple[str, ...]]  # split -> its shard file names
    image_key: str
    label_key: str
    num_classes: int


def parse_layout(info_text: str, features_text: str, where: str) -> Layout:
    """The layout from the two files' text (pure); raises TrainerError naming the problem."""
    def fail(problem: str) -> TrainerError:
        return TrainerError(f"{where}: {problem}")

    try:
        info, features = json.loads(info_text), json.loads(features_text)
    except ValueError as err:
        raise fail(f"{INFO} or {FEATURES} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or not isinstance(features, dict):
        raise fail(f"{INFO} and {FEATURES} must hold JSON objects")
    file_format = info.get("fileFormat") or "tfrecord"
    if file_format != "tfrecord":
        raise fail(f"the dataset is stored as {file_format}; only tfrecord is read (prepare it "
                   "with file_format='tfrecord')")
    specs = (features.get("featuresDict") or {}).get("features")
    if not isinstance(specs, dict):
        raise fail(f"{FEATURES} has no featuresDict.features (written by TFDS 4 or newer)")
    found = {kind: [key for key, spec in specs.items() if isinstance(spec, dict) and kind in spec]
             for kind in ("image", "classLabel")}
    if len(found["image"]) != 1 or len(found["classLabel"]) != 1:
        raise fail(f"expected one Image and one ClassLabel feature; {FEATURES} has "
                   f"{len(found['image'])} and {len(found['classLabel'])} ({', '.join(specs)})")
    label_key = found["classLabel"][0]
    try:
        num_classes = int(specs[label_key]["classLabel"]["numClasses"])
    except (KeyError, TypeError, ValueError):
        raise fail(f"the ClassLabel {label_key!r} has no numClasses") from None
    name = str(info.get("name", ""))
    shards = {}
    for split in info.get("splits") or []:
        try:
            count = len(split["shardLengths"])
            template = split.get("filepathTemplate") or _TEMPLATE
            shards[split["name"]] = tuple(
                template.replace("{DATASET}", name).replace("{SPLIT}", split["name"])
                .replace("{FILEFORMAT}", file_format)
                .replace("{SHARD_X_OF_Y}", f"{index:05d}-of-{count:05d}") for index in range(count))
        except (KeyError, TypeError):
            raise fail(f"{INFO} has a split without a name and shardLengths") from None
    if not shards:
        raise fail(f"{INFO} lists no splits")
    return Layout(name, str(info.get("version", "")), shards, found["image"][0], label_key,
                  num_classes)


def _split_files(layout: Layout, folder: str, request: Request) -> tuple[list[str], str]:
    """The shards the request reads and the split's name."""
    wanted = _SPLITS[request.split] if request.split else tuple(layout.shards)
    chosen = [split for split in wanted if split in layout.shards]
    if not chosen:
        raise TrainerError(f"{request.origin}: {folder} has no {' or '.join(wanted)} split "
                           f"(it has {', '.join(layout.shards)}); {request.split_origin} reads "
                           "it, or give that split's shards as files")
    chosen = chosen[:1] if request.split else chosen
    files = [storage.join(folder, name) for split in chosen for name in layout.shards[split]]
    return files, "+".join(chosen)


def _classes(layout: Layout, folder: str, request: Request) -> Classes:
    names_file = storage.join(folder, f"{layout.label_key}.labels.txt")
    if request.label_map:
        names_file = request.label_map
    elif not storage.exists(names_file):
        names_file = None
    names = tuple(labels.read(names_file, request.origin)) if names_file else None
    count = len(names) if names else layout.num_classes
    if count != layout.num_classes:
        raise TrainerError(f"{request.origin}: {names_file} has {count} labels; the dataset's "
                           f"{layout.label_key!r} has {layout.num_classes} classes")
    if request.classes is not None:
        if request.classes.num_classes != count or (names and request.classes.names and
                                                    request.classes.names != names):
            raise TrainerError(f"{request.origin}: TFDS {layout.name} has {count} classes; they "
                               f"differ from those of {request.classes.origin}")
        return request.classes
    if request.num_classes is not None and request.num_classes != count:
        raise TrainerError(f"{request.terms.num_classes} is {request.num_classes} but TFDS "
                           f"{layout.name} has {count} classes; omit it to infer it")
    return Classes(names, count, names_file or f"TFDS {layout.name}")


def inspect(probe: Probe, request: Request) -> encoded_records.EncodedRecords:
    folder = probe.folder or storage.dirname(probe.files[0])
    layout = parse_layout(text.read(storage.join(folder, INFO), request.origin),
                          text.read(storage.join(folder, FEATURES), request.origin),
                          f"{request.origin}: {folder}")
    if probe.folder is None:
        files, what = probe.files, f"{len(probe.files)} shard(s)"
    else:
        files, split = _split_files(layout, folder, request)
        what = f"the {split!r} split"
    return encoded_records.inspect_records(
        files, request, _classes(layout, folder, request), image_key=layout.image_key,
        label_key=layout.label_key,
        description=f"examples in {what} of TFDS {layout.name} {layout.version}")


DETECTOR = Detector("TFDS dataset folder",
                    lambda probe: probe.holds(INFO) and probe.holds(FEATURES), inspect)
