"""A folder of small photos: MNIST digits written as PNG/JPEG files of 20-60 px, some RGB
(trainer.tools.digit_photos), read at 32x32x3.

Two tables. **Input over 5 epochs**: images/s of the training input pipeline alone (no model)
with `--cache memory`, against its uncached path and keras' `image_dataset_from_directory(...)
.cache()`, without and with `--augment` (keras' pipeline has no augmentation); every round
builds fresh pipelines, so each fills its cache anew. **Time to accuracy**: the photo recipe
(RECIPE) run whole with and without `--cache memory`, evaluated on the MNIST test set as photos,
and the wall time until its accuracy first reaches 98%.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time

from trainer.benchmarks import runner
from trainer.benchmarks.markdown import met
from trainer.benchmarks.sections.accuracy import measure_run

SHAPE = (32, 32, 3)
EPOCHS = 5
TARGET = 0.98
# resnet20 trains on a CPU in minutes at 32x32 (README: the CIFAR ResNets).
RECIPE = ("--model", "resnet20", "--image-height", "32", "--image-width", "32",
          "--image-channels", "3", "--batch-size", "128", "--lr-schedule", "cosine",
          "--seed", "1", "--mixed-precision", "none")


def write_photos(budget: runner.Budget, train_files: str, eval_files: str, root: str) -> dict:
    from trainer.tools import digit_photos

    return {"train": len(digit_photos.write_folder(train_files, os.path.join(root, "train"),
                                                   budget.photo_train)),
            "test": len(digit_photos.write_folder(eval_files, os.path.join(root, "test"),
                                                  budget.photo_test, seed=1))}


def photos(ctx: runner.Context) -> dict:
    """{"root", "train", "test"}: the photo folders, written once per benchmark run."""
    def make():
        root = tempfile.mkdtemp(prefix="benchmark-photos-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        ctx.say(f"writing MNIST digits as photos of 20-60 px into {root} ...")
        return {"root": root, **runner.child(write_photos, ctx.budget,
                                             train_files=ctx.train_files,
                                             eval_files=ctx.eval_files, root=root)}

    return ctx.once("photos", make)


def measure_input(budget: runner.Budget, folder: str) -> dict:
    """{variant: [images/s per round]} over EPOCHS epochs of `folder`'s training input."""
    import keras
    import tensorflow as tf

    from trainer import data
    from trainer.data import cache

    batch = budget.photo_batch
    source = data.inspect_input((folder,), "--train-files", SHAPE, None)
    steps = EPOCHS * source.size // batch

    def ours(kind, augment):
        def make():
            chosen = cache.plan(kind, [source], job_dir=folder, pipelines=1)
            return data.make_dataset(source, batch_size=batch, training=True, seed=1,
                                     shuffle_buffer=10_000, augment=augment,
                                     cache=chosen).take(steps)
        return make

    def keras_cached():
        # As TensorFlow's image-classification tutorial caches it.
        return keras.utils.image_dataset_from_directory(
            folder, image_size=SHAPE[:2], batch_size=batch, verbose=False).cache().repeat(
            EPOCHS).prefetch(tf.data.AUTOTUNE)

    def rate(make):
        def timed():
            dataset = make()
            start = time.perf_counter()
            count = sum(int(images.shape[0]) for images, _ in dataset)
            return count / (time.perf_counter() - start)
        return timed

    return runner.alternate({
        "uncached": rate(ours(None, False)), "cached": rate(ours("memory", False)),
        "keras": rate(keras_cached), "uncached_augment": rate(ours(None, True)),
        "cached_augment": rate(ours("memory", True))}, budget.rounds)


def time_to_accuracy(budget: runner.Budget, train: str, test: str, job_dir: str,
                     cache: str | None) -> dict:
    """One whole run of RECIPE: its evaluations and when the first one reached TARGET."""
    flags = ["--train-files", train, "--eval-files", test, "--job-dir", job_dir, *RECIPE,
             "--max-steps", str(budget.photo_steps), "--warmup-steps",
             str(budget.photo_steps // 10), "--eval-every-steps",
             str(budget.photo_eval_every), "--log-every-steps", str(budget.photo_eval_every)]
    run = measure_run(budget, flags + (["--cache", cache] if cache else []))
    evaluations = run["evaluations"]
    # Start-up (and the end of the run) is what training, evaluations and export leave over.
    startup = (run["total_seconds"] - evaluations[-1]["train_seconds"]
               - sum(e["seconds"] for e in evaluations) - run["export_seconds"])
    spent = startup
    for evaluation in evaluations:
        spent += evaluation["seconds"]
        if evaluation["accuracy"] >= TARGET:
            return {**run, "reached": {**evaluation,
                                       "wall": spent + evaluation["train_seconds"]}}
    return {**run, "reached": None}


def run(ctx: runner.Context) -> list[str]:
    budget, folders = ctx.budget, photos(ctx)
    train, test = (os.path.join(folders["root"], split) for split in ("train", "test"))
    ctx.say(f"photo folder: {EPOCHS} epochs of training input, alternating ...")
    rates = runner.medians(runner.child(measure_input, budget, folder=train))
    size = f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}"
    cached, augmented = rates["cached"] / rates["uncached"], \
        rates["cached_augment"] / rates["uncached_augment"]
    keras_ratio = rates["cached"] / rates["keras"]
    lines = [f"### Photo-folder input over {EPOCHS} epochs ({folders['train']:,} digit photos "
             f"of 20-60 px, PNG/JPEG -> {size}, batch {budget.photo_batch})", "",
             "| pipeline | images/s | |", "|---|---:|---|",
             f"| trainer, uncached (every epoch decodes every image) | "
             f"{rates['uncached']:,.0f} | |",
             f"| trainer, `--cache memory` | {rates['cached']:,.0f} | {cached:.2f}x uncached "
             f"(target >= 3: {met(cached >= 3)}), {keras_ratio:.2f}x keras (target >= 1.2: "
             f"{met(keras_ratio >= 1.2)}) |",
             f"| `keras.utils.image_dataset_from_directory(...).cache()` | "
             f"{rates['keras']:,.0f} | |",
             f"| trainer `--augment`, uncached | {rates['uncached_augment']:,.0f} | |",
             f"| trainer `--augment`, `--cache memory` | {rates['cached_augment']:,.0f} | "
             f"{augmented:.2f}x uncached |", ""]
    lines += [f"### Photo folder to {TARGET:.0%} test accuracy ({folders['train']:,} training "
              f"photos, the {folders['test']:,} MNIST test digits as photos; "
              f"`{' '.join(RECIPE[:8])}`, batch 128, cosine after "
              f"{budget.photo_steps // 10} warm-up steps, eval every {budget.photo_eval_every} "
              "steps)", "",
              f"| input | {TARGET:.0%} at step | wall s to it | training s to it | accuracy at "
              f"step {budget.photo_steps} | whole run s |", "|---|---:|---:|---:|---:|---:|"]
    for cache in (None, "memory"):
        ctx.say(f"photo recipe to {budget.photo_steps} steps, "
                f"{'--cache ' + cache if cache else 'uncached'} ...")
        with tempfile.TemporaryDirectory(prefix="benchmark-photo-run-") as job_dir:
            measured = runner.child(time_to_accuracy, budget, train=train, test=test,
                                    job_dir=job_dir, cache=cache)
        hit = measured["reached"]
        reached = (f"{hit['step']} | {hit['wall']:.0f} | {hit['train_seconds']:.0f}" if hit
                   else "not reached | - | -")
        lines.append(f"| {'`--cache memory`' if cache else 'uncached'} | {reached} | "
                     f"{measured['final']['accuracy']:.2%} | {measured['total_seconds']:.0f} |")
    return lines
