"""SavedModel export for hosted prediction (chief only), and loading it back.

The SavedModel (tag `serve`) loads and predicts identically under TensorFlow 2.15 (Vertex's
newest prebuilt prediction image, `tf2-cpu.2-15`) and 2.21. It has three signatures, each
returning `probabilities` float32 [N, num_classes], `classes` int64 [N] and, when exported with
a label map, `labels` string [N] (the predicted class's name). A label map is also written to
`labels.txt` beside `saved_model.pb`, one label per line. `export.json` there names the step
and a digest of the weights it holds, so a rerun of a finished job finds its export.

`serving_default`: input `image`, float32 [N, H, W, C] scaled to [0, 1], as training feeds it.

    {"instances": [[[[0.0], [0.5], ...], ...]]}       (one H x W x C nested list per image)

`encoded_image`: input `image_bytes`, PNG/JPEG (BMP, first GIF frame) bytes [N]. Decoded to C
channels (colour converts to grey and back), scaled to [0, 1] and, when not H x W already,
resized to cover H x W (aspect kept, bilinear, antialiased) and centre-cropped, exactly as
training evaluates images (trainer/data/images.py).

    {"signature_name": "encoded_image", "instances": [{"image_bytes": {"b64": "iVBORw0K..."}}]}

`tf_example`: input `example_bytes`, serialized tf.train.Example [N] of the trainer's record
schema: `image` (raw uint8 bytes, HWC) with optional `height`/`width`/`depth` (checked), or the
classic tutorials' `image_raw` (float32 or uint8 bytes). `label` is ignored.

    {"signature_name": "tf_example", "instances": [{"example_bytes": {"b64": "CpUGCg8K..."}}]}

Vertex's `predict` reaches only `serving_default` on the prebuilt TF image (it forwards no
signature name); use `rawPredict` with a TF Serving body as above for the other two. Our own
server (`trainer.serve`) also takes `"parameters": {"signature_name": ...}`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import keras
import tensorflow as tf

from trainer import records, storage
from trainer.data import images, labels
from trainer.storage import dirname, join
from trainer.errors import TrainerError, short_reason
from trainer.serving import litert

log = logging.getLogger(__name__)

LABELS_FILE = labels.FILE_NAME
STAGING_SUFFIX = ".tmp-"  # + pid: an export is written beside its place, then moved in
RECORD_FILE = "export.json"  # {"step": ..., "weights": weights_digest(...)} of the export


def weights_digest(weights) -> str:
    """A short hash of a model's weights (numpy arrays): equal only for equal weights."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


def read_label_map(path: str, num_classes: int | None, source: str = "--label-map") -> list[str]:
    """Class names from a file of one label per line (line i names class i); with
    `num_classes` None, any count of at least 2."""
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
    except (tf.errors.OpError, UnicodeDecodeError) as err:
        raise TrainerError(f"{source}: cannot read {path} ({short_reason(err)})") from None
    names = labels.parse(text, path, source)
    if num_classes is not None and len(names) != num_classes:
        raise TrainerError(f"{source}: {path} has {len(names)} labels; expected {num_classes} "
                           "(--num-classes), one per line")
    return names


def _predictions(model, images, class_names):
    probabilities = tf.nn.softmax(model(images, training=False), axis=-1)
    classes = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    outputs = {"probabilities": probabilities, "classes": classes}
    if class_names:
        outputs["labels"] = tf.gather(tf.constant(class_names), classes)
    return outputs


def _parse_examples(serialized, image_shape):
    height, width, channels = image_shape
    pixels = height * width * channels
    shape_text = f"{height}x{width}x{channels}"
    spec = {records.IMAGE: tf.io.FixedLenFeature([], tf.string, default_value=""),
            records.LEGACY_IMAGE: tf.io.FixedLenFeature([], tf.string, default_value="")}
    for key, dim in zip(records.SHAPE_KEYS, image_shape):
        spec[key] = tf.io.FixedLenFeature([], tf.int64, default_value=dim)
    features = tf.io.parse_example(serialized, spec)
    current, legacy = features[records.IMAGE], features[records.LEGACY_IMAGE]
    current_size, legacy_size = tf.strings.length(current), tf.strings.length(legacy)
    sized = tf.where(current_size > 0, current_size == pixels,
                     (legacy_size == pixels) | (legacy_size == 4 * pixels))
    declared = tf.stack([features[key] for key in records.SHAPE_KEYS], axis=1)
    # Assert escapes quotes in its message, so the messages go without.
    checks = [
        tf.debugging.Assert(tf.reduce_all(sized), [
            f"example_bytes: a record holds an image of the wrong size; expected feature "
            f"{records.IMAGE} of {pixels} uint8 bytes, or {records.LEGACY_IMAGE} of {pixels} "
            f"uint8 or {4 * pixels} float32 bytes, for {shape_text}"]),
        tf.debugging.Assert(tf.reduce_all(declared == image_shape), [
            f"example_bytes: a record declares height/width/depth other than {shape_text}"]),
    ]

    def decode(record):
        image, image_raw = record

        def raw(data, dtype):
            values = tf.reshape(tf.io.decode_raw(data, dtype), image_shape)
            return values if dtype == tf.float32 else tf.cast(values, tf.float32) * (1.0 / 255.0)

        return tf.cond(
            tf.strings.length(image) > 0, lambda: raw(image, tf.uint8),
            lambda: tf.cond(tf.strings.length(image_raw) == pixels,
                            lambda: raw(image_raw, tf.uint8), lambda: raw(image_raw, tf.float32)))

    with tf.control_dependencies(checks):
        return tf.map_fn(decode, (current, legacy),
                         fn_output_signature=tf.TensorSpec(image_shape, tf.float32))


def write_saved_model(model, path: str, image_shape: tuple[int, int, int],
                      class_names: list[str] | None = None, record: dict | None = None) -> None:
    """Writes the SavedModel beside `path` first, then moves it into place whole; `record`
    (what it holds) goes into its RECORD_FILE."""
    image_shape = tuple(image_shape)
    endpoints = {
        "serving_default": (lambda image: _predictions(model, image, class_names),
                            tf.TensorSpec([None, *image_shape], tf.float32, name="image")),
        "encoded_image": (lambda image_bytes: _predictions(
            model, images.eval_images(image_bytes, image_shape), class_names),
            tf.TensorSpec([None], tf.string, name="image_bytes")),
        "tf_example": (lambda example_bytes: _predictions(
            model, _parse_examples(example_bytes, image_shape), class_names),
            tf.TensorSpec([None], tf.string, name="example_bytes")),
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, spec) in endpoints.items():
        archive.add_endpoint(name=name, fn=fn, input_signature=[spec])
    staging = f"{path.rstrip('/')}{STAGING_SUFFIX}{os.getpid()}"
    try:
        archive.write_out(staging, verbose=False)
        if class_names:
            with tf.io.gfile.GFile(join(staging, LABELS_FILE), "w") as f:
                f.write("".join(f"{name}\n" for name in class_names))
        if record is not None:
            storage.write_text(join(staging, RECORD_FILE), json.dumps(record) + "\n")
        _convert_for_slim_serving(staging)
        storage.replace_dir(staging, path)
    except (tf.errors.OpError, OSError):
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        raise


def _convert_for_slim_serving(staging: str) -> None:
    """The LiteRT model the slim serving image runs (it has no TensorFlow to convert with), stored
    in the export; an export LiteRT cannot take is still a complete export, served by TensorFlow."""
    started = time.perf_counter()
    try:
        litert.write_beside(staging)
    except litert.ConversionError as err:
        log.warning("export: no LiteRT model (%s); serve it with TensorFlow", err)
        return
    log.info("export: LiteRT model for the slim server converted in %.1f s",
             time.perf_counter() - started)


def remove_staging_leftovers(path_pattern: str) -> None:
    """Removes the half-written exports that a killed run left matching `path_pattern`."""
    for leftover in tf.io.gfile.glob(f"{path_pattern.rstrip('/')}{STAGING_SUFFIX}*"):
        tf.io.gfile.rmtree(leftover)
        log.info("removed %s, an export that was cut short", leftover)


def load(path: str, source: str):
    """The SavedModel at `path` (local or gs://); `source` names the flag in errors."""
    try:
        if not tf.io.gfile.exists(join(path, "saved_model.pb")):
            raise TrainerError(f"{source}: {path} holds no saved_model.pb; expected a "
                               "SavedModel directory written by trainer.task")
        return tf.saved_model.load(path)
    # A damaged file surfaces as whatever the parser meets first: OSError for saved_model.pb,
    # IndexError for a short variables file, ValueError, an OpError...
    except (tf.errors.OpError, ValueError, OSError, IndexError, KeyError) as err:
        raise TrainerError(f"{source}: cannot load the SavedModel at {path} "
                           f"({storage.problem(err, path)})") from None


def class_names_of(path: str) -> list[str] | None:
    """The label map exported with the SavedModel at `path`, if any."""
    labels_path = join(path, LABELS_FILE)
    if not tf.io.gfile.exists(labels_path):
        return None
    with tf.io.gfile.GFile(labels_path, "r") as f:
        return f.read().splitlines()


@dataclasses.dataclass
class Exporter:
    """Writes the model's current weights as a SavedModel (at the end, or on each new best).

    `local_model` is a non-distributed model of the same architecture that receives the
    weights before each export. `class_names` (line i of the label map names class i) adds the
    `labels` output.

    With `timestamped`, each export gets `<export_dir>/<unix seconds>/` (tf.estimator's layout);
    otherwise `export_dir` itself holds the model (Vertex's AIP_MODEL_DIR).
    """

    model: object  # keras.Model
    local_model: object
    _: dataclasses.KW_ONLY
    export_dir: str
    timestamped: bool
    image_shape: tuple[int, int, int]
    class_names: list[str] | None = None
    last_export: str | None = dataclasses.field(default=None, init=False)
    seconds: float = dataclasses.field(default=0.0, init=False)  # spent exporting, for benchmarks

    def remove_leftovers(self) -> None:
        """Removes half-written exports of earlier runs that were killed while exporting."""
        remove_staging_leftovers(join(self.export_dir, "*") if self.timestamped
                                 else self.export_dir)

    def export(self, step: int) -> str:
        """The export of the model's weights at `step`: written, unless an earlier run (a
        finished job run again) already exported these weights at this step."""
        path = self.export_dir
        try:
            weights = self.model.get_weights()
            record = {"step": step, "weights": weights_digest(weights)}
            existing = self._existing(record)
            if existing is not None:
                log.info("the model at step %d (weights %s) is already exported to %s; not "
                         "exporting it again", step, record["weights"], existing)
                self.last_export = existing
                return existing
            if self.timestamped:
                stamp = int(time.time())
                while tf.io.gfile.exists(join(self.export_dir, str(stamp))):
                    stamp += 1
                path = join(self.export_dir, str(stamp))
            start = time.perf_counter()
            # A plain local copy: distributed (mirrored, ps-placed) variables stay out of it.
            self.local_model.set_weights(weights)
            write_saved_model(self.local_model, path, self.image_shape, self.class_names,
                              record)
        except (tf.errors.OpError, OSError) as err:
            raise TrainerError(f"cannot export the model to {path} "
                               f"({storage.problem(err, path)}); the checkpoints are kept: free "
                               "space or fix access and rerun to export") from None
        seconds = time.perf_counter() - start
        self.seconds += seconds
        log.info("exported the model at step %d to %s (%.1f s)", step, path, seconds)
        self.last_export = path
        return path

    def _existing(self, record: dict) -> str | None:
        """The export whose RECORD_FILE says `record`, if there is one (exports of older
        versions have none: they are exported again, once)."""
        pattern = (join(self.export_dir, "*", RECORD_FILE) if self.timestamped
                   else join(self.export_dir, RECORD_FILE))
        for path in sorted(tf.io.gfile.glob(pattern)):
            try:
                with tf.io.gfile.GFile(path, "r") as f:
                    if json.loads(f.read()) == record:
                        return dirname(path)
            except ValueError:  # not one of ours: never mistaken for the export
                continue
        return None
