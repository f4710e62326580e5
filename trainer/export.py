"""SavedModel export for hosted prediction (chief only).

The SavedModel (tag `serve`) has a `serving_default` signature that takes a float32 image batch
`image` [N, H, W, C] scaled to [0, 1], as the input pipeline feeds training, and returns
`probabilities` [N, num_classes] and `classes` [N] (int64).
"""

from __future__ import annotations

import logging
import os
import time

import keras
import tensorflow as tf

from trainer import storage
from trainer.config import join

log = logging.getLogger(__name__)


def write_saved_model(model, path: str, image_shape: tuple[int, int, int]) -> None:
    """Writes the SavedModel beside `path` first, then moves it into place whole."""

    def serve(image):
        probabilities = tf.nn.softmax(model(image, training=False), axis=-1)
        return {"probabilities": probabilities,
                "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default", fn=serve,
        input_signature=[tf.TensorSpec([None, *image_shape], tf.float32, name="image")])
    staging = f"{path.rstrip('/')}.tmp-{os.getpid()}"
    archive.write_out(staging, verbose=False)
    storage.replace_dir(staging, path)


class Exporter:
    """Exports once at the end, or with `best_only` after each evaluation that improved.

    `local_model` is a non-distributed model of the same architecture that receives the
    weights before each export.

    With `timestamped`, each export gets `<export_dir>/<unix seconds>/` (tf.estimator's layout);
    otherwise `export_dir` itself holds the model (Vertex's AIP_MODEL_DIR).
    """

    def __init__(self, model, local_model, *, export_dir: str, timestamped: bool,
                 image_shape: tuple[int, int, int], best_only: bool):
        self._model = model
        self._local_model = local_model
        self._export_dir = export_dir
        self._timestamped = timestamped
        self._image_shape = image_shape
        self._best_only = best_only
        self.last_export: str | None = None

    def on_evaluation(self, step: int, metrics: dict, improved: bool) -> None:
        if self._best_only and improved:
            self.export(step)

    def on_finish(self, step: int) -> None:
        if not self._best_only:
            self.export(step)

    def export(self, step: int) -> str:
        path = self._export_dir
        if self._timestamped:
            stamp = int(time.time())
            while tf.io.gfile.exists(join(self._export_dir, str(stamp))):
                stamp += 1
            path = join(self._export_dir, str(stamp))
        start = time.perf_counter()
        # A plain local copy: distributed (mirrored, ps-placed) variables stay out of the model.
        self._local_model.set_weights(self._model.get_weights())
        write_saved_model(self._local_model, path, self._image_shape)
        log.info("exported the model at step %d to %s (%.1f s)", step, path,
                 time.perf_counter() - start)
        self.last_export = path
        return path
