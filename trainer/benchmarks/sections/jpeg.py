"""The encoded-JPEG input pipeline: images/s at 224x224x3 from ~500x375 photo-like JPEGs, the
trainer's training path against a bare decode + resize map and keras
image_dataset_from_directory. Needs no data flags: it writes its own JPEGs."""

from __future__ import annotations

import os
import tempfile
import time

from trainer.benchmarks import runner
from trainer.benchmarks.markdown import met

SIZE = (375, 500)  # height, width: a typical photo of the flowers/ImageNet kind


def write_jpeg_folder(folder: str, count: int, classes: int = 3) -> None:
    """Photo-like JPEGs (smooth colour fields plus grain) in `classes` class folders."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
        image = tf.image.resize(coarse, SIZE, method="bicubic").numpy()
        image += rng.normal(0, 8, image.shape)
        path = os.path.join(folder, f"class{index % classes}", f"{index:04d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8),
                                      quality=90).numpy())


def measure(budget: runner.Budget) -> dict:
    """{pipeline: [images/s per round], pipeline_cpu: [images per CPU-second per round]} for
    the trainer (decode, random resized crop, flip), a bare map and keras, over one folder."""
    import keras
    import tensorflow as tf

    from trainer import data

    batch, batches = budget.jpeg_batch, budget.jpeg_batches
    with tempfile.TemporaryDirectory(prefix="jpegs-") as folder:
        write_jpeg_folder(folder, budget.jpeg_count)
        source = data.inspect_input((folder,), "--train-files", (224, 224, 3), None)
        files = list(source.uris)

        def trainer_pipeline():
            return data.make_dataset(source, batch_size=batch, training=True, seed=1,
                                     augment=True).take(batches)

        def bare():
            def load(path):
                image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
                return tf.image.resize(image, (224, 224)) / 255.0

            return tf.data.Dataset.from_tensor_slices(files).repeat().map(
                load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).take(
                batches).prefetch(tf.data.AUTOTUNE)

        def keras_directory():
            return keras.utils.image_dataset_from_directory(
                folder, image_size=(224, 224), batch_size=batch, verbose=False).repeat() \
                .take(batches)

        def rates_of(make):
            """(images per second, images per CPU-second of this process): the second hardly
            moves with the load of a shared machine."""
            def timed():
                dataset = make()
                start, cpu_start = time.perf_counter(), time.process_time()
                # The bare loop's batches are images alone (batch[0] would be one image).
                images = sum(int(tf.nest.flatten(b)[0].shape[0]) for b in dataset)
                return (images / (time.perf_counter() - start),
                        images / (time.process_time() - cpu_start))
            return timed

        pairs = runner.alternate({"trainer": rates_of(trainer_pipeline), "bare": rates_of(bare),
                                  "keras": rates_of(keras_directory)}, budget.rounds)
    return {key: [pair[column] for pair in values] for name, values in pairs.items()
            for column, key in enumerate((name, f"{name}_cpu"))}


def run(ctx: runner.Context) -> list[str]:
    ctx.say("encoded-JPEG input pipeline ...")
    budget = ctx.budget
    rates = runner.medians(runner.child(measure, budget))

    def ratio(other):
        return rates["trainer"] / rates[other], rates["trainer_cpu"] / rates[f"{other}_cpu"]

    def row(label, name):
        return f"| {label} | {rates[name]:,.0f} | {rates[f'{name}_cpu']:,.0f} |"

    bare, bare_cpu = ratio("bare")
    keras_rate, keras_cpu = ratio("keras")
    return [f"### Encoded-JPEG input pipeline ({budget.jpeg_count} JPEGs of {SIZE[1]}x{SIZE[0]}"
            f" -> 224x224x3, batch {budget.jpeg_batch})", "",
            "| pipeline | images/s | images per CPU-second |", "|---|---|---|",
            row("trainer training path (decode, random resized crop, flip)", "trainer"),
            row("bare `decode_jpeg` + resize map", "bare"),
            row("`keras.utils.image_dataset_from_directory` (decode + resize)", "keras"),
            f"| trainer / bare (target >= 0.9) | {bare:.2f} ({met(bare >= 0.9)}) | "
            f"{bare_cpu:.2f} |",
            f"| trainer / keras (target >= 2) | {keras_rate:.2f} ({met(keras_rate >= 2)}) | "
            f"{keras_cpu:.2f} |"]
