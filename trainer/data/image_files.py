"""Source: image files, listed by JSONL/CSV manifests or found in class folders (ROOT/CLASS/x.jpg).

The list (URI, label) is read up front, which is also where the label map comes from; the images
themselves are read inside tf.data, in parallel, and never downloaded up front. The first few
URIs are checked to exist, so that a manifest pointing at the wrong bucket fails at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import tensorflow as tf

from trainer import storage
from trainer.data import manifests
from trainer.errors import TrainerError, short_reason

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_CHECK_FIRST = 8
_THREADS = 16


@dataclass(frozen=True)
class ImageFiles:
    flag: str
    files: tuple[str, ...]  # the manifests, or the root folder
    description: str
    uris: tuple[str, ...]
    labels: tuple[int, ...]
    wheres: tuple[str, ...]  # "URI (MANIFEST line N)" or the URI, for error messages
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None = None
    parses_batches = False

    @property
    def size(self) -> int:
        return len(self.uris)

    def units(self, *, training: bool, shuffle_buffer: int, seed: int | None, input_context):
        # The list is small (names, not pixels): shuffle all of it every epoch.
        del shuffle_buffer
        dataset = tf.data.Dataset.from_tensor_slices(
            (list(self.uris), list(self.labels), list(self.wheres)))
        count = len(self.uris)
        if input_context is not None and input_context.num_input_pipelines > 1:
            pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
            dataset = dataset.shard(pipelines, index)
            count = len(range(index, count, pipelines))
        if training:
            dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True).repeat()
        return dataset

    def parse_one(self, uri, label, where):
        # The pipeline reads the file where a failure can be caught and named.
        return uri, label, where


def read_text(path: str, origin: str) -> str:
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return f.read()
    except (tf.errors.OpError, UnicodeDecodeError) as err:
        raise TrainerError(f"{origin}: cannot read {path} ({short_reason(err)})") from None


def manifest_items(files: list[str], flag: str, origin: str) -> list[manifests.Item]:
    items = []
    for path in files:
        items += manifests.parse(read_text(path, origin), path, origin)
    return manifests.for_flag(items, flag, origin)


def is_folder(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[") and tf.io.gfile.isdir(pattern)


def folder_items(root: str, origin: str) -> list[manifests.Item]:
    """ROOT/CLASS/image for every class folder; an empty class folder is an error."""
    root = root.rstrip("/")
    try:
        entries = sorted(tf.io.gfile.listdir(root))
    except tf.errors.OpError as err:
        raise TrainerError(f"{origin}: cannot list {root} ({short_reason(err)})") from None
    classes = [e.rstrip("/") for e in entries if tf.io.gfile.isdir(storage.join(root, e))]
    loose = [e for e in entries if e.lower().endswith(IMAGE_SUFFIXES)]
    if loose:
        raise TrainerError(f"{origin}: {root} holds images ({loose[0]}, ...) directly; expected "
                           "one folder per class: ROOT/CLASS/image.jpg")
    if not classes:
        raise TrainerError(f"{origin}: {root} has no class folders; expected "
                           "ROOT/CLASS/image.jpg")

    def images_of(name):
        folder = storage.join(root, name)
        return sorted(storage.join(folder, f.rstrip("/")) for f in tf.io.gfile.listdir(folder)
                      if f.lower().endswith(IMAGE_SUFFIXES))

    with ThreadPoolExecutor(min(_THREADS, len(classes))) as pool:
        found = list(pool.map(images_of, classes))
    items = []
    for name, paths in zip(classes, found):
        if not paths:
            raise TrainerError(f"{origin}: class folder {storage.join(root, name)} holds no "
                               f"images ({', '.join(IMAGE_SUFFIXES)})")
        items += [manifests.Item(path, name, "", path) for path in paths]
    return items


def check_first_exist(items: list[manifests.Item], origin: str) -> None:
    def exists(item):
        return item, tf.io.gfile.exists(item.uri)

    head = items[:_CHECK_FIRST]
    with ThreadPoolExecutor(min(_THREADS, len(head))) as pool:
        for item, found in pool.map(exists, head):
            if not found:
                raise TrainerError(f"{origin}: {item.where}: image {item.uri} does not exist")


def make(flag: str, files: list[str], description: str, items: list[manifests.Item],
         indices: list[int], image_shape, num_classes: int, class_names) -> ImageFiles:
    wheres = tuple(item.uri if item.where == item.uri else f"{item.uri} ({item.where})"
                   for item in items)
    return ImageFiles(flag, tuple(files), description, tuple(item.uri for item in items),
                      tuple(indices), wheres, tuple(image_shape), num_classes,
                      tuple(class_names))
