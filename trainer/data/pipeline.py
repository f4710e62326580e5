"""One tf.data pipeline for every source: units -> parse -> decode/augment -> batch -> prefetch.

`make_dataset` is the body of a `dataset_fn` for `strategy.distribute_datasets_from_function`:
each input pipeline reads its shard of the source's units (records or image URIs), shuffled and
repeated for training. Raw-pixel records parse a whole batch at once; encoded images are read
and decoded one by one in a parallel map. An undecodable image stops the run there, and
`explain_pipeline_error` (which turns the op errors of bad data into one-line messages) then
finds and names it (file and record, or URI and manifest line) with a scan of the source. With
`skipped`, each image is decoded inside its own small dataset instead, so that a failure becomes
a flag: the image is dropped and counted.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings

import tensorflow as tf

from trainer.data import bad_images, images
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

# With --seed, tf.data warns once per random augmentation op that the graph seed reaches it:
# intended here (runs stay reproducible), and noise in a job's log.
warnings.filterwarnings("ignore", message="Seed .* from outer graph might be getting used")

_LOGGED_SKIPS = 10


class SkippedImages:
    """Counts the images dropped by --skip-corrupt-images in this process and logs the first."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def note(self, where) -> bool:
        with self._lock:
            self.count += 1
            count = self.count
        if count <= _LOGGED_SKIPS or count % 1000 == 0:
            log.warning("skipped a corrupt or unreadable image: %s (%d so far%s)",
                        where.numpy().decode("utf-8", "replace"), count,
                        "; further ones are counted, not listed" if count == _LOGGED_SKIPS
                        else "")
        return False


class SkipReport:
    """An evaluation action: the count of skipped images as a TensorBoard scalar (train run,
    `skipped_images`) and a log line when it grew."""

    def __init__(self, skipped: SkippedImages, tensorboard_dir: str):
        self._skipped = skipped
        self._writer = tf.summary.create_file_writer(f"{tensorboard_dir.rstrip('/')}/train")
        self._reported = 0

    def on_evaluation(self, evaluation) -> None:
        count = self._skipped.count
        with self._writer.as_default(step=evaluation.step):
            tf.summary.scalar("skipped_images", count)
        self._writer.flush()
        if count != self._reported:
            log.info("skipped %d corrupt or unreadable image(s) so far (--skip-corrupt-images)",
                     count)
            self._reported = count


def make_dataset(source, *, batch_size: int, training: bool, shuffle_buffer: int = 0,
                 num_batches: int | None = None, seed: int | None = None,
                 input_context: tf.distribute.InputContext | None = None, augment: bool = False,
                 augment_min_area: float = images.AUGMENT_MIN_AREA,
                 skipped: SkippedImages | None = None, cache=None) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1] shaped [B, H, W, C], int32 labels).

    `batch_size` is global; with an `input_context` each pipeline gets its replicas' share and
    its own shard of the data. Training data is shuffled and repeated forever (and augmented with
    `augment`: crops of `augment_min_area`-100% of the image); evaluation data is read once, in
    a deterministic order. With `skipped`, images that cannot be read or decoded are dropped and
    counted there instead of stopping the run. With a `cache` (trainer.data.cache.Cache) that
    covers the source, decoded images are kept after their first read (`_cached`).
    """
    if input_context is not None and input_context.num_input_pipelines > 1:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if source.parses_batches:
        units = source.units(training=training, shuffle_buffer=shuffle_buffer, seed=seed,
                             input_context=input_context)
        dataset = units.batch(batch_size, drop_remainder=training)
        if num_batches is not None:
            dataset = dataset.take(num_batches)
        dataset = dataset.map(source.parse_batch, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=not training)
    else:
        if cache is not None and cache.covers(source):
            dataset = _cached(source, cache, training=training, shuffle_buffer=shuffle_buffer,
                              seed=seed, input_context=input_context, skipped=skipped)
        else:
            units = source.units(training=training, shuffle_buffer=shuffle_buffer, seed=seed,
                                 input_context=input_context)
            dataset = _decoded(units, source, _preprocess(source, training, augment,
                                                          augment_min_area), skipped, training)
        dataset = dataset.batch(batch_size, drop_remainder=training)
        if num_batches is not None:
            dataset = dataset.take(num_batches)
        if dataset.element_spec[0].dtype == tf.uint8:
            # Cached pixels become floats (and are augmented) a batch at a time: a few ops a
            # batch, where ops per image would cost more than decoding small images did. In
            # order, so that each epoch stays whole batches.
            shape = source.image_shape
            finish = (functools.partial(images.augmented_batch, image_shape=shape,
                                        min_area=augment_min_area)
                      if training and augment else images.to_float)
            dataset = dataset.map(lambda pixels, labels: (finish(pixels), labels),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Destroying an iterator while the autotune model's optimizer thread sleeps blocks for up to
    # 60 s (seen here: 6-30 s between the last evaluation and the export). With the model off,
    # AUTOTUNE parallelism resolves to the core count, and this pipeline measured as fast or
    # faster (154k vs 141k records/s), far above what training consumes.
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _preprocess(source, training: bool, augment: bool, min_area: float):
    """Encoded data of `parse_one` -> the float32 image the model gets."""
    shape = source.image_shape

    def preprocess(data):
        data = source.read(data)
        if training:
            return images.train_image(data, shape, augment, min_area)
        return images.eval_image(data, shape)

    return preprocess


def _cached(source, cache, *, training: bool, shuffle_buffer: int, seed: int | None,
            input_context, skipped: SkippedImages | None):
    """(uint8 image, label) of `source`, its images decoded and resized once and cached.

    The cache is filled from one epoch of the source's own units, shuffled as the uncached
    pipeline shuffles them, so the first epoch trains at once, in the usual order; from the
    second on, the cached images are shuffled anew each epoch. Augmentation comes after the
    cache (make_dataset, a batch at a time), so it varies per epoch too. Evaluation reads the
    cache in its fixed order.
    """
    shape = source.image_shape
    units = source.units(training=training, shuffle_buffer=shuffle_buffer, seed=seed,
                         input_context=input_context, repeat=False)
    stored = _decoded(units, source, lambda data: images.cached_image(source.read(data), shape),
                      skipped, training).cache(cache.target(source, input_context))
    if not training:
        return stored
    # The second read of `stored` starts when the first has ended, the cache complete.
    later = stored.shuffle(cache.shuffle_buffer(source, shuffle_buffer), seed=seed,
                           reshuffle_each_iteration=True).repeat()
    return stored.concatenate(later)


def _decoded(units, source, preprocess, skipped: SkippedImages | None, training: bool):
    """(image, label) of each unit, `preprocess` applied to its data in a parallel map."""
    if skipped is None:
        # A bad image fails this map with an op error that names no image:
        # explain_pipeline_error finds it then, so the common case pays nothing for it.
        def decode(*unit):
            data, label, _ = source.parse_one(*unit)
            return preprocess(data), label

        return units.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=not training)

    def attempt(*unit):
        data, label, where = source.parse_one(*unit)
        # ignore_errors turns a read or decode failure into an empty dataset, and the fallback
        # element then says so: the failure never escapes as an op error. (Several times slower
        # than a plain map: only for skipping.)
        decoded = tf.data.Dataset.from_tensors(data).map(
            lambda d: (preprocess(d), True)).ignore_errors()
        fallback = tf.data.Dataset.from_tensors(
            (tf.zeros(source.image_shape, decoded.element_spec[0].dtype), False))
        return decoded.concatenate(fallback).take(1).map(
            lambda image, ok: (image, label, where, ok))

    def keep(image, label, where, ok):
        return tf.cond(ok, lambda: tf.constant(True), lambda: tf.ensure_shape(
            tf.py_function(skipped.note, [where], tf.bool), []))

    dataset = units.interleave(attempt, cycle_length=tf.data.AUTOTUNE, block_length=1,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return dataset.filter(keep).map(lambda image, label, where, ok: (image, label))


def explain_pipeline_error(err: Exception, source) -> TrainerError | None:
    """A one-line TrainerError for a data problem met while reading `source`, else None."""
    if not source.parses_batches and bad_images.is_image_error(err):
        return bad_images.explain(err, source)
    if isinstance(err, tf.errors.InvalidArgumentError):
        found = re.search(r"assertion failed: \[\[\[(.*?)\]\]\](.*)", err.message or "", re.S)
        if found:
            text, seen = found.group(1), " ".join(found.group(2).split("\n")[0].split())
            return TrainerError(f"{text} {seen}".strip())
    return source.explain(err)

