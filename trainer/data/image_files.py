"""Source: image files, listed by JSONL/CSV manifests, found in class folders (ROOT/CLASS/x.jpg),
or given one by one (their folder names the class, or, for predict, no class is known).

The list (URI, label) is read up front, which is also where the label map comes from; the images
themselves are read inside tf.data, in parallel, and never downloaded up front. The first few
URIs are checked to exist, so that a manifest pointing at the wrong bucket fails at once.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import tensorflow as tf

from trainer import storage
from trainer.data import labels, manifests, text
from trainer.data.source import IMAGE_SUFFIXES, Classes, Detector, Inspected, Probe, Request
from trainer.data.source import fingerprint as source_fingerprint
from trainer.data.source import is_folder as is_folder  # prepare_images reads folders as we do
from trainer.errors import TrainerError, short_reason

_CHECK_FIRST = 8
_THREADS = 16
read_text = text.read  # prepare_images reads manifests as we do


@dataclass(frozen=True, kw_only=True)
class ImageFiles(Inspected):
    """Image files, each read by its URI; `files` are the manifests, the root folder, or the
    images themselves."""

    uris: tuple[str, ...]
    labels: tuple[int, ...]  # -1 each when not labelled
    wheres: tuple[str, ...]  # "URI (MANIFEST line N)" or the URI, for error messages
    labelled: bool = True
    parses_batches = False

    def units(self, *, training: bool, shuffle_buffer: int, seed: int | None, input_context,
              repeat: bool = True):
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
            dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
            if repeat:
                dataset = dataset.repeat()
        return dataset

    def parse_one(self, uri, label, where):
        # The pipeline reads the file (`read`) where a failure can be caught and named.
        return uri, label, where

    def read(self, uri):
        return tf.io.read_file(uri)

    def name_image(self, uri) -> str:
        return f"image {uri.numpy().decode('utf-8', 'replace')}"

    def example_names(self):
        return tf.data.Dataset.from_tensor_slices(list(self.wheres))

    def explain(self, err: Exception) -> None:
        return None  # image errors are the pipeline's; there is nothing else to read

    def fingerprint(self) -> str:
        return source_fingerprint((self.uris, self.labels, self.image_shape), self.uris)


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


def _manifest_items(probe: Probe, request: Request) -> list[manifests.Item]:
    items = []
    for path in probe.files:
        items += manifests.parse(text.read(path, request.origin), path, request.origin)
    return manifests.for_split(items, request.split, request.split_origin, request.origin)


def _named_classes(items: list[manifests.Item], request: Request) -> Classes:
    """The training data's classes: --label-map, else the names its items use, sorted."""
    if request.label_map:
        names = labels.read(request.label_map, "--label-map")
        origin = f"--label-map {request.label_map}"
    else:
        first = {}
        for item in items:
            first.setdefault(item.label, item.where)
        labels.check_names(first.items(), request.origin)
        names, origin = labels.build(first), request.origin
    if len(names) < 2:
        raise TrainerError(f"{request.origin}: the training data has {len(names)} class "
                           f"({', '.join(names)}); expected at least 2")
    return Classes(tuple(names), labels.check_num_classes(request.num_classes, list(names),
                                                          origin), origin)


def _check_first_exist(items: list[manifests.Item], origin: str) -> None:
    def exists(item):
        return item, tf.io.gfile.exists(item.uri)

    head = items[:_CHECK_FIRST]
    with ThreadPoolExecutor(min(_THREADS, len(head))) as pool:
        for item, found in pool.map(exists, head):
            if not found:
                raise TrainerError(f"{origin}: {item.where}: image {item.uri} does not exist")


def _source(probe: Probe, request: Request, items: list[manifests.Item], description: str,
            classes: Classes | None = None) -> ImageFiles:
    """Named items checked against the classes (the training data's, or those they define)."""
    classes = classes or request.classes or _named_classes(items, request)
    if classes.names is None:
        raise TrainerError(f"{request.origin}: labels are class names, but the training data has "
                           "integer labels and no label map; give --label-map")
    indices = labels.indices(((item.label, item.where) for item in items), list(classes.names),
                             request.origin, classes.origin)
    _check_first_exist(items, request.origin)
    return ImageFiles(
        **Inspected.of(request, classes),
        files=tuple(probe.files if probe.folder is None else [probe.folder]),
        description=description, size=len(items), uris=tuple(item.uri for item in items),
        labels=tuple(indices),
        wheres=tuple(item.uri if item.where == item.uri else f"{item.uri} ({item.where})"
                     for item in items))


def _inspect_folder(probe: Probe, request: Request) -> ImageFiles:
    return _source(probe, request, folder_items(probe.folder, request.origin),
                   "image(s) in class folders")


def _inspect_manifests(probe: Probe, request: Request) -> ImageFiles:
    return _source(probe, request, _manifest_items(probe, request),
                   f"image(s) listed by {len(probe.files)} manifest(s)")


def _inspect_images(probe: Probe, request: Request) -> ImageFiles:
    """Images named one by one: labelled by their folders when every folder names a class."""
    paths = probe.files
    folders = [posixpath.basename(posixpath.dirname(path)) for path in paths]
    known = request.classes is not None and request.classes.names is not None
    if known and set(folders) <= set(request.classes.names):
        return _source(probe, request, [manifests.Item(p, f, "", p) for p, f in zip(paths,
                                                                                   folders)],
                       "image file(s) in class folders")
    if request.labels_required or request.classes is None:
        raise TrainerError(f"{request.origin}: {paths[0]} is an image; give a folder with one "
                           "subfolder per class (ROOT/CLASS/image.jpg) or a JSONL/CSV manifest "
                           "that labels it")
    _check_first_exist([manifests.Item(p, "", "", p) for p in paths], request.origin)
    return ImageFiles(**Inspected.of(request, request.classes), files=tuple(paths),
                      description="image file(s) of no known class", size=len(paths),
                      uris=tuple(paths),
                      labels=(-1,) * len(paths), wheres=tuple(paths), labelled=False)


CLASS_FOLDERS = Detector("class folders", lambda probe: probe.folder is not None, _inspect_folder)
IMAGES = Detector("image files", lambda probe: probe.folder is None and all(
    probe.named(IMAGE_SUFFIXES)), _inspect_images)
MANIFESTS = Detector("JSONL/CSV manifests", lambda probe: probe.folder is None and probe.text,
                     _inspect_manifests)
