"""Measure the trainer on this machine and write the results as a markdown table.

    python scripts/benchmark.py --train-files '/tmp/mnist/train-*' --eval-files '/tmp/mnist/eval-*'

Each measurement runs in a fresh Python process, so no TensorFlow state, memory or thread pool
carries from one to the next. Within a process the alternatives (trainer loop in fp32, bf16 and
with XLA; Keras `model.fit` of the same model, optimizer and dataset) are timed in alternating
rounds after a warm-up call that includes tracing, and the table quotes medians: this kind of
machine is noisy, so only ratios measured side by side mean much. Takes about 15 minutes on
2 cores; the table goes to stdout and to --output (default BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from trainer.cli import OneLineParser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = ("dnn", "cnn_small", "cnn", "cnn_bn")
BATCHES = (100, 128)
ROUNDS = 3
STEPS_PER_CALL = 40
PIPELINE_RECORDS = 60_000
TARGET_ACCURACY = 0.99
ACCURACY_MAX_STEPS = 2000
ACCURACY_EVAL_EVERY = 250
ENGINE_STEPS = 200  # timed steps per engine call, as many as the estimator's timed window
ESTIMATOR_STEPS, ESTIMATOR_WARMUP = 300, 100
BREAKDOWN_STEPS = 50


# --- measurements, each run in its own process (`--child KIND`) -------------------------------

MNIST_SHAPE = (28, 28, 1)
RESNET = "resnet20"
RESNET_SHAPE, RESNET_BATCH = (32, 32, 3), 128  # CIFAR's images, He et al.'s batch
RESNET_ACCURACY_STEPS = 600


def _source(patterns: str, shape=MNIST_SHAPE):
    from trainer import data

    return data.inspect_input(tuple(patterns.split(",")), "--train-files", shape, 10)


def _shape(args) -> tuple[int, int, int]:
    return tuple(int(n) for n in args.shape.split(",")) if args.shape else MNIST_SHAPE


def measure_pipeline(args) -> dict:
    """records/s of make_dataset's training path against a plain read of the same files."""
    import tensorflow as tf

    from trainer import data

    source = _source(args.train_files)
    batches = PIPELINE_RECORDS // 100

    def trainer_pipeline():
        return data.make_dataset(source, batch_size=100, training=True, shuffle_buffer=10_000,
                                 seed=1).take(batches)

    def raw_read():
        return tf.data.TFRecordDataset(list(source.files), source.compressions[0],
                                       num_parallel_reads=len(source.files)).repeat().batch(
            100).take(batches)

    def rate(make):
        start = time.perf_counter()
        records = sum(int(tf.shape(batch[1] if isinstance(batch, tuple) else batch)[0])
                      for batch in make())
        return records / (time.perf_counter() - start)

    rates = {"trainer": [], "raw": []}
    rate(trainer_pipeline), rate(raw_read)  # page cache and thread pools warm
    for _ in range(ROUNDS):
        rates["trainer"].append(rate(trainer_pipeline))
        rates["raw"].append(rate(raw_read))
    return rates


def _build(name: str, precision: str, shape=MNIST_SHAPE):
    import keras

    from trainer import models
    from trainer.precision import POLICIES

    spec = models.MODELS[name]
    # Mirrors trainer.task: the policy applies while the training model is built.
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        model = models.build_model(name, shape, 10, spec.dropout)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, models.build_optimizer(spec.optimizer, spec.learning_rate,
                                         weight_decay=spec.weight_decay)


class _LoopVariant:
    """The trainer's own path: StepFunctions over make_dataset, STEPS_PER_CALL steps a call."""

    def __init__(self, source, model_name: str, batch: int, precision: str, jit: bool = False,
                 steps_per_call: int = STEPS_PER_CALL):
        import tensorflow as tf

        from trainer import data, loop
        from trainer.loss_scale import DynamicLossScale

        model, optimizer = _build(model_name, precision, source.image_shape)
        optimizer.build(model.trainable_variables)
        strategy = tf.distribute.get_strategy()
        self._steps = loop.StepFunctions(
            strategy, model, optimizer, batch, jit_compile=jit,
            loss_scale=DynamicLossScale() if precision == "fp16" else None)
        self._iterator = iter(strategy.distribute_datasets_from_function(
            lambda context=None: data.make_dataset(source, batch_size=batch, training=True,
                                                   shuffle_buffer=10_000, seed=1,
                                                   input_context=context)))
        self._num_steps = tf.constant(steps_per_call, tf.int64)
        self._examples = steps_per_call * batch
        self.run()

    def run(self) -> float:
        start = time.perf_counter()
        self._steps.train(self._iterator, self._num_steps).numpy()
        return self._examples / (time.perf_counter() - start)


class _FitVariant:
    """The in-repo baseline: plain `model.fit` (Keras defaults) of the same model and data."""

    def __init__(self, source, model_name: str, batch: int):
        import keras

        from trainer import data

        model, optimizer = _build(model_name, "none", source.image_shape)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self._model = model
        self._dataset = data.make_dataset(source, batch_size=batch, training=True,
                                          shuffle_buffer=10_000, seed=1)
        self._batch = batch
        self._seconds = 0.0
        outer = self

        class EpochClock(keras.callbacks.Callback):
            # Only the steps: fit's per-call set-up (iterator, callbacks) is left out, in the
            # baseline's favour.
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer._seconds = time.perf_counter() - self.start

        self._callbacks = [EpochClock()]
        self.run()

    def run(self) -> float:
        self._model.fit(self._dataset, steps_per_epoch=STEPS_PER_CALL, epochs=1, verbose=0,
                        callbacks=self._callbacks)
        return STEPS_PER_CALL * self._batch / self._seconds


def measure_training(args) -> dict:
    """Median examples/s of each variant of one model at one batch size, alternating rounds."""
    source = _source(args.train_files, _shape(args))
    variants = {"fp32": lambda: _LoopVariant(source, args.model, args.batch, "none"),
                "bf16": lambda: _LoopVariant(source, args.model, args.batch, "bf16")}
    if args.jit:
        variants["xla"] = lambda: _LoopVariant(source, args.model, args.batch, "none", jit=True)
    variants["fit"] = lambda: _FitVariant(source, args.model, args.batch)
    built = {name: make() for name, make in variants.items()}
    rates = {name: [] for name in built}
    for _ in range(ROUNDS):
        for name, variant in built.items():
            rates[name].append(variant.run())
    return rates


def measure_engine(args) -> dict:
    """Our loop on the estimator's job (cnn, batch 100) in fp32 and in what `auto` picks here,
    alternating; one warm-up call each, then ENGINE_STEPS steps timed per call."""
    from trainer import distribute, precision

    auto = precision.choose("auto", distribute.device_facts(on_tpu=False))
    source = _source(args.train_files)
    variants = {"fp32": _LoopVariant(source, "cnn", 100, "none", steps_per_call=ENGINE_STEPS),
                "auto": _LoopVariant(source, "cnn", 100, auto.precision,
                                     steps_per_call=ENGINE_STEPS)}
    rates = {name: variant.run() for name, variant in variants.items()}
    return {**rates, "auto_precision": auto.precision, "auto_reason": auto.reason}


def measure_breakdown(args) -> dict:
    """Milliseconds per step of --model at --batch (fp32), taken apart: the input pipeline
    alone, forward, forward + backward, + optimizer (a fixed batch, in-graph loop), the loop as
    it trains (input included), and the loop called once per step (Python between steps)."""
    import tensorflow as tf

    from trainer import data, loop

    source = _source(args.train_files, _shape(args))
    model, optimizer = _build(args.model, "none", source.image_shape)
    optimizer.build(model.trainable_variables)
    steps = loop.StepFunctions(tf.distribute.get_strategy(), model, optimizer, args.batch)
    dataset = data.make_dataset(source, batch_size=args.batch, training=True,
                                shuffle_buffer=10_000, seed=1)
    iterator = iter(dataset)
    images, labels = next(iterator)
    n = BREAKDOWN_STEPS

    def in_graph_loop(body):
        @tf.function
        def repeat(count):
            total = tf.constant(0.0)
            for _ in tf.range(count):
                total += body()
            return total
        return lambda: repeat(tf.constant(n)).numpy()

    def reduced(tensors):
        return tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in tensors])

    parts = {
        "input": in_graph_loop(lambda: tf.reduce_sum(next(iterator)[0])),
        "forward": in_graph_loop(lambda: tf.reduce_sum(model(images, training=True))),
        "forward_backward": in_graph_loop(
            lambda: reduced(steps._scaled_gradients(images, labels)[0])),
        "step_fixed_batch": in_graph_loop(lambda: tf.reduce_sum(steps._train_step(images,
                                                                                 labels))),
        "loop": lambda: steps.train(iterator, tf.constant(n, tf.int64)).numpy(),
        "loop_one_step_per_call": lambda: [steps.train(iterator, tf.constant(1, tf.int64))
                                           .numpy() for _ in range(n)],
    }
    times = {name: [] for name in parts}
    for run in parts.values():
        run()  # tracing
    for _ in range(ROUNDS):
        for name, run in parts.items():
            start = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - start) / n)
    return times


def measure_accuracy_run(args) -> dict:
    """A whole `trainer.task` run: evaluations, export, peak RSS, from the run's own result."""
    from trainer import task
    from trainer.config import config_from_flags

    start = time.perf_counter()
    result = task.run(config_from_flags(args.task_flags, {}))
    evaluations = [{"step": e.step, "accuracy": e.metrics["accuracy"],
                    "train_seconds": e.train_seconds} for e in result.evaluations]
    return {"evaluations": evaluations, "export_seconds": result.export_seconds,
            "total_seconds": time.perf_counter() - start, "final": result.metrics,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


JPEG_COUNT = 300
JPEG_SIZE = (375, 500)  # height, width: a typical photo of the flowers/ImageNet kind
JPEG_BATCH = 64
JPEG_BATCHES = 20


def write_jpeg_folder(folder: str, count: int = JPEG_COUNT, classes: int = 3) -> None:
    """Photo-like JPEGs (smooth colour fields plus grain) in `classes` class folders."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for index in range(count):
        coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
        image = tf.image.resize(coarse, JPEG_SIZE, method="bicubic").numpy()
        image += rng.normal(0, 8, image.shape)
        path = os.path.join(folder, f"class{index % classes}", f"{index:04d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8),
                                      quality=90).numpy())


def measure_jpeg_pipeline(args) -> dict:
    """images/s at 224x224x3 from ~500x375 JPEGs: the trainer's training path (decode, random
    resized crop, flip), a bare decode_jpeg + resize map, and keras image_dataset_from_directory
    (decode + resize), each over the same folder, in alternating rounds."""
    import keras
    import tensorflow as tf

    from trainer import data

    with tempfile.TemporaryDirectory(prefix="jpegs-") as folder:
        write_jpeg_folder(folder)
        source = data.inspect_input((folder,), "--train-files", (224, 224, 3), None)
        files = list(source.uris)

        def trainer_pipeline():
            return data.make_dataset(source, batch_size=JPEG_BATCH, training=True, seed=1,
                                     augment=True).take(JPEG_BATCHES)

        def bare():
            def load(path):
                image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
                return tf.image.resize(image, (224, 224)) / 255.0

            return tf.data.Dataset.from_tensor_slices(files).repeat().map(
                load, num_parallel_calls=tf.data.AUTOTUNE).batch(JPEG_BATCH).take(
                JPEG_BATCHES).prefetch(tf.data.AUTOTUNE)

        def keras_directory():
            return keras.utils.image_dataset_from_directory(
                folder, image_size=(224, 224), batch_size=JPEG_BATCH, verbose=False).repeat() \
                .take(JPEG_BATCHES)

        def rates_of(make):
            """(images per second, images per CPU-second of this process): the second hardly
            moves with the load of a shared machine."""
            dataset = make()
            start, cpu_start = time.perf_counter(), time.process_time()
            # The bare loop's batches are images alone (batch[0] would be one image, 224 rows).
            images = sum(int(tf.nest.flatten(batch)[0].shape[0]) for batch in dataset)
            return (images / (time.perf_counter() - start),
                    images / (time.process_time() - cpu_start))

        makers = {"trainer": trainer_pipeline, "bare": bare, "keras": keras_directory}
        for make in makers.values():
            rates_of(make)  # page cache and thread pools warm
        rates = {key: [] for name in makers for key in (name, f"{name}_cpu")}
        for _ in range(ROUNDS):
            for name, make in makers.items():
                wall, cpu = rates_of(make)
                rates[name].append(wall)
                rates[f"{name}_cpu"].append(cpu)
    return rates


def jpeg_section(say) -> list[str]:
    say("encoded-JPEG input pipeline ...")
    rates = {k: _median(v) for k, v in _child("jpeg").items()}

    def ratio(other):
        return rates["trainer"] / rates[other], rates["trainer_cpu"] / rates[f"{other}_cpu"]

    def row(label, name):
        return f"| {label} | {rates[name]:,.0f} | {rates[f'{name}_cpu']:,.0f} |"

    bare, bare_cpu = ratio("bare")
    keras_rate, keras_cpu = ratio("keras")
    return [f"### Encoded-JPEG input pipeline ({JPEG_COUNT} JPEGs of {JPEG_SIZE[1]}x{JPEG_SIZE[0]}"
            f" -> 224x224x3, batch {JPEG_BATCH})", "",
            "| pipeline | images/s | images per CPU-second |", "|---|---|---|",
            row("trainer training path (decode, random resized crop, flip)", "trainer"),
            row("bare `decode_jpeg` + resize map", "bare"),
            row("`keras.utils.image_dataset_from_directory` (decode + resize)", "keras"),
            f"| trainer / bare (target >= 0.9) | {bare:.2f} ({_met(bare >= 0.9)}) | "
            f"{bare_cpu:.2f} |",
            f"| trainer / keras (target >= 2) | {keras_rate:.2f} ({_met(keras_rate >= 2)}) | "
            f"{keras_cpu:.2f} |", ""]


def measure_cifar_shaped(args) -> dict:
    """Writes the MNIST train and eval sets in CIFAR's shape under --output; their globs."""
    return {"train": write_cifar_shaped(args.train_files, args.output, "train", 8),
            "eval": write_cifar_shaped(args.eval_files, args.output, "eval", 2)}


def write_cifar_shaped(patterns: str, output_dir: str, prefix: str, shards: int) -> str:
    """MNIST in CIFAR's shape (each digit padded to 32x32, its grey repeated over 3 channels) as
    raw TFRecords; returns their glob. No CIFAR ships here, and this keeps the accuracy of a
    resnet20 run meaningful while its cost is that of CIFAR-10's images."""
    import numpy as np

    from trainer.tools.prepare_mnist import write_shards
    from trainer import data

    images, labels = [], []
    for batch_images, batch_labels in data.make_dataset(_source(patterns), batch_size=1000,
                                                        training=False):
        images.append(np.rint(batch_images.numpy() * 255).astype(np.uint8))
        labels.append(batch_labels.numpy())
    padded = np.pad(np.concatenate(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    write_shards(np.repeat(padded, 3, axis=-1), np.concatenate(labels), output_dir, prefix,
                 shards, progress=False)
    return os.path.join(output_dir, f"{prefix}-*")


def resnet_section(args, say) -> list[str]:
    """resnet20 at 32x32x3, batch 128: our loop against `fit` in fp32, bf16 against fp32 in
    speed and in accuracy at equal steps, and where its step goes."""
    shape = ",".join(map(str, RESNET_SHAPE))
    size = ("--image-height", str(RESNET_SHAPE[0]), "--image-width", str(RESNET_SHAPE[1]),
            "--image-channels", str(RESNET_SHAPE[2]))
    with tempfile.TemporaryDirectory(prefix="cifar-shaped-") as tmp:
        say("MNIST in CIFAR's shape for resnet20 ...")
        files = _child("cifar_shaped", **{"train-files": args.train_files,
                                          "eval-files": args.eval_files, "output": tmp})
        train, evaluation = files["train"], files["eval"]
        say(f"training {RESNET} at batch {RESNET_BATCH} ...")
        rates = {k: _median(v) for k, v in _child("training", **{
            "train-files": train, "model": RESNET, "batch": RESNET_BATCH,
            "shape": shape}).items()}
        breakdown = _breakdown(train, RESNET, RESNET_BATCH, RESNET_SHAPE, say)
        runs = {}
        for precision in ("none", "bf16"):
            say(f"{RESNET} to {RESNET_ACCURACY_STEPS} steps, mixed precision {precision} ...")
            runs[precision] = _child("accuracy", task_flags=[
                "--train-files", train, "--eval-files", evaluation, *size, "--model", RESNET,
                "--batch-size", str(RESNET_BATCH), "--max-steps", str(RESNET_ACCURACY_STEPS),
                "--eval-every-steps", str(RESNET_ACCURACY_STEPS), "--lr-schedule", "cosine",
                "--warmup-steps", str(RESNET_ACCURACY_STEPS // 6), "--seed", "1",
                "--mixed-precision", precision,
                "--job-dir", os.path.join(tmp, precision)])
    fit_ratio, bf16_ratio = rates["fp32"] / rates["fit"], rates["bf16"] / rates["fp32"]
    accuracy = {p: r["final"]["accuracy"] for p, r in runs.items()}
    gap = 100 * (accuracy["bf16"] - accuracy["none"])
    return [f"### `{RESNET}`, {'x'.join(map(str, RESNET_SHAPE))}, batch {RESNET_BATCH} "
            "(MNIST padded to 32x32 and repeated over 3 channels)", "",
            "| measure | value | target |", "|---|---|---|",
            f"| our loop fp32 | {rates['fp32']:,.0f} examples/s | |",
            f"| Keras `model.fit` fp32 (same model, optimizer, data) | {rates['fit']:,.0f} "
            "examples/s | |",
            f"| our loop bf16 | {rates['bf16']:,.0f} examples/s | |",
            f"| fp32 / fit | {fit_ratio:.2f} | >= 1.1 ({_met(fit_ratio >= 1.1)}) |",
            f"| bf16 / fp32 | {bf16_ratio:.2f} | >= 1.5 ({_met(bf16_ratio >= 1.5)}) |",
            f"| test accuracy after {RESNET_ACCURACY_STEPS} steps, fp32 / bf16 | "
            f"{accuracy['none']:.2%} / {accuracy['bf16']:.2%} ({gap:+.2f} points) | "
            f"within 0.3 points ({_met(abs(gap) <= 0.3)}) |", "", *breakdown]


CHILDREN = {"pipeline": measure_pipeline, "training": measure_training,
            "accuracy": measure_accuracy_run, "jpeg": measure_jpeg_pipeline,
            "engine": measure_engine, "breakdown": measure_breakdown,
            "cifar_shaped": measure_cifar_shaped}


def _child(kind: str, **options) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--child", kind]
    for key, value in options.items():
        if key == "task_flags":
            argv += ["--", *value]
        elif value is True:
            argv.append(f"--{key}")
        else:
            argv += [f"--{key}", str(value)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: benchmark step {' '.join(argv[2:])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_IMPORT_RSS = """
import json, tensorflow
rss = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("VmRSS", "RssAnon", "RssFile"):
        name = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}[key]
        rss[name] = int(value.split()[0]) // 1024
print(json.dumps(rss))
"""


def _import_rss(python: str) -> dict:
    """What importing TensorFlow alone holds, in MB: the floor under any training run."""
    proc = subprocess.run([python, "-c", _IMPORT_RSS], capture_output=True, text=True,
                          check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _help_seconds() -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trainer.task", "--help"], cwd=REPO, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- orchestration and report -------------------------------------------------------------------

def _median(values) -> float:
    return statistics.median(values)


def _first_reaching(evaluations) -> dict | None:
    return next((e for e in evaluations if e["accuracy"] >= TARGET_ACCURACY), None)


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _cpu() -> dict:
    from trainer.precision import cpu_flags, cpu_model

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    flags = cpu_flags(text)
    has = {name: any(f in flags for f in names) for name, names in (
        ("AVX-512", ("avx512f",)), ("AVX512_BF16", ("avx512_bf16",)),
        ("AMX-BF16", ("amx_bf16",)), ("AVX512_FP16", ("avx512_fp16",)))}
    features = ", ".join(name if present else f"no {name}" for name, present in has.items())
    return {"model": cpu_model(text), "features": features}


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _estimator(args, steps: int = ESTIMATOR_STEPS) -> dict:
    """The seed's engine (scripts/estimator_baseline.py) under TF 2.15, in its own process."""
    from tests import tf215_env

    argv = [tf215_env.python(), os.path.join(os.path.dirname(os.path.abspath(__file__)), "estimator_baseline.py"),
            "--train-files", args.train_files, "--steps", str(steps),
            "--warmup-steps", str(ESTIMATOR_WARMUP)]
    proc = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode != 0:
        sys.exit(f"error: the estimator baseline failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _each(rates) -> str:
    return ", ".join(f"{r:,.0f}" for r in rates)


def _against_estimator(args, say) -> list[str]:
    rounds = []
    for index in range(ROUNDS):
        say(f"tf.estimator (TF 2.15) vs our loop, round {index + 1}/{ROUNDS} ...")
        rounds.append((_estimator(args), _child("engine", **{"train-files": args.train_files})))
    estimator = _median([e["examples_per_sec"] for e, _ in rounds])
    fp32 = _median([o["fp32"] for _, o in rounds])
    auto = _median([o["auto"] for _, o in rounds])
    precision = rounds[0][1]["auto_precision"]
    return [
        "### Against the seed's engine: `cnn`, batch 100, same TFRecords", "",
        f"tf.estimator on TensorFlow {rounds[0][0]['tensorflow']} (scripts/estimator_baseline.py,"
        f" default RunConfig) and our loop alternate process by process, {ROUNDS} rounds; each "
        f"times {ESTIMATOR_STEPS - ESTIMATOR_WARMUP} steady-state steps after a warm-up. `auto` "
        f"chose {precision} here ({rounds[0][1]['auto_reason']}).", "",
        "| engine | examples/s (median) | rounds | / estimator | target |", "|---|---|---|---|---|",
        f"| tf.estimator fp32 | {estimator:,.0f} | "
        f"{_each(e['examples_per_sec'] for e, _ in rounds)} | 1.00 | |",
        f"| our loop fp32 | {fp32:,.0f} | {_each(o['fp32'] for _, o in rounds)} | "
        f"{fp32 / estimator:.2f} | >= 1.2 ({_met(fp32 / estimator >= 1.2)}) |",
        f"| our loop `auto` ({precision}) | {auto:,.0f} | "
        f"{_each(o['auto'] for _, o in rounds)} | {auto / estimator:.2f} | "
        + (f">= 2 where the CPU has native bf16 ({_met(auto / estimator >= 2)})"
           if precision == "bf16" else "(no native bf16: auto is fp32)") + " |",
        f"| estimator peak RSS (training only, {ESTIMATOR_STEPS} steps) | "
        f"{_median([e['peak_rss_mb'] for e, _ in rounds]):,.0f} MB | | | |", ""]


_BREAKDOWN = (("input", "input pipeline alone (next batch)"),
              ("forward", "forward pass (fixed batch)"),
              ("forward_backward", "forward + backward"),
              ("step_fixed_batch", "forward + backward + optimizer ({optimizer})"),
              ("loop", f"the loop as it trains (input included, {BREAKDOWN_STEPS} steps per "
                       "call)"),
              ("loop_one_step_per_call", "the loop, one tf.function call per step"))


def _breakdown(files: str, model: str, batch: int, shape, say) -> list[str]:
    from trainer import models

    say(f"where a {model} step goes ...")
    ms = {k: _median(v) for k, v in _child("breakdown", **{
        "train-files": files, "model": model, "batch": batch,
        "shape": ",".join(map(str, shape))}).items()}
    optimizer = models.MODELS[model].optimizer
    return [f"### Where a `{model}` step goes ({'x'.join(map(str, shape))}, fp32, batch {batch}, "
            "ms per step, medians)", "",
            "| part | ms/step |", "|---|---|",
            *(f"| {label.format(optimizer=optimizer)} | {ms[key]:.1f} |"
              for key, label in _BREAKDOWN), "",
            f"Derived: backward {ms['forward_backward'] - ms['forward']:.1f} ms, optimizer "
            f"{ms['step_fixed_batch'] - ms['forward_backward']:.1f} ms, input inside the loop "
            f"{ms['loop'] - ms['step_fixed_batch']:.1f} ms, Python per extra call "
            f"{ms['loop_one_step_per_call'] - ms['loop']:.1f} ms.", ""]


def benchmark(args, say) -> tuple[str, str]:
    """(hardware class, its markdown section)."""
    cpu = _cpu()
    hardware = f"{cpu['model']}, {os.cpu_count()} cores ({cpu['features']}), no GPU"
    load_before = _load()
    lines = [f"TensorFlow {importlib.metadata.version('tensorflow')}, Python "
             f"{platform.python_version()}; `python scripts/benchmark.py` on "
             f"{time.strftime('%Y-%m-%d')}. Medians of {ROUNDS} alternating rounds after a "
             f"warm-up call; training rounds are {STEPS_PER_CALL} steps.", ""]
    lines += _against_estimator(args, say)
    lines += _breakdown(args.train_files, "cnn", 100, MNIST_SHAPE, say)
    say("input pipeline ...")
    pipe = _child("pipeline", **{"train-files": args.train_files})
    trainer_rate, raw_rate = _median(pipe["trainer"]), _median(pipe["raw"])
    lines += ["### Input pipeline (batch 100, training path)", "",
              "| pipeline | records/s |", "|---|---|",
              f"| trainer `make_dataset` (shuffle, batch, parse) | {trainer_rate:,.0f} |",
              f"| raw TFRecord read of the same files | {raw_rate:,.0f} |",
              f"| ratio (target >= 0.8) | {trainer_rate / raw_rate:.2f} "
              f"({_met(trainer_rate / raw_rate >= 0.8)}) |", ""]

    lines += jpeg_section(say)
    lines += resnet_section(args, say)

    lines += ["### Training examples/s (steady state)", "",
              "| model | batch | trainer fp32 | trainer bf16 | trainer fp32 + XLA | "
              "Keras `fit` fp32 | fp32 / fit | bf16 / fit |", "|---|---|---|---|---|---|---|---|"]
    cnn_ratio = None
    for model in MODELS:
        for batch in BATCHES:
            say(f"training {model} at batch {batch} ...")
            jit = batch == BATCHES[0]  # XLA once per model: it costs long compiles
            rates = {k: _median(v) for k, v in _child(
                "training", **{"train-files": args.train_files, "model": model,
                               "batch": batch, "jit": jit}).items()}
            xla = f"{rates['xla']:,.0f}" if "xla" in rates else "-"
            lines.append(f"| {model} | {batch} | {rates['fp32']:,.0f} | {rates['bf16']:,.0f} | "
                         f"{xla} | {rates['fit']:,.0f} | {rates['fp32'] / rates['fit']:.2f} | "
                         f"{rates['bf16'] / rates['fit']:.2f} |")
            if model == "cnn" and batch == 100:
                cnn_ratio = rates["fp32"] / rates["fit"], rates["bf16"] / rates["fit"]
    lines += ["", f"`cnn` at batch 100 against `fit`: fp32 {cnn_ratio[0]:.2f}x, bf16 "
                  f"{cnn_ratio[1]:.2f}x (target fp32 >= 1.5x: {_met(cnn_ratio[0] >= 1.5)}).", ""]

    runs = {}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        for precision in ("bf16", "none"):
            say(f"cnn on full MNIST to {ACCURACY_MAX_STEPS} steps, mixed precision "
                f"{precision} ...")
            runs[precision] = _child("accuracy", task_flags=[
                "--train-files", args.train_files, "--eval-files", args.eval_files,
                "--model", "cnn", "--batch-size", "100", "--max-steps", str(ACCURACY_MAX_STEPS),
                "--eval-every-steps", str(ACCURACY_EVAL_EVERY), "--seed", "1",
                "--mixed-precision", precision, "--job-dir", os.path.join(tmp, precision)])
    lines += [f"### `cnn` on full MNIST (batch 100, eval every {ACCURACY_EVAL_EVERY} steps on the "
              "10k test set)", "",
              "| step | " + " | ".join(f"{p} accuracy | {p} training s" for p in runs) + " |",
              "|---" * (1 + 2 * len(runs)) + "|"]
    for rows in zip(*(r["evaluations"] for r in runs.values())):
        lines.append(f"| {rows[0]['step']} | " + " | ".join(
            f"{e['accuracy']:.2%} | {e['train_seconds']:.1f}" for e in rows) + " |")
    lines.append("")
    for precision, run in runs.items():
        hit = _first_reaching(run["evaluations"])
        lines.append(f"- mixed precision {precision}: " + (
            f"{TARGET_ACCURACY:.1%} at step {hit['step']} after {hit['train_seconds']:.1f} s of "
            f"training (target <= ~50 s: {_met(hit['train_seconds'] <= 50)})" if hit else
            f"{TARGET_ACCURACY:.1%} not reached in {ACCURACY_MAX_STEPS} steps (not met)"))
    final = {p: r["evaluations"][-1]["accuracy"] for p, r in runs.items()}
    lines += [f"- bf16 - fp32 accuracy at step {ACCURACY_MAX_STEPS}: "
              f"{100 * (final['bf16'] - final['none']):+.2f} points", ""]

    say("trainer.task --help ...")
    help_seconds = _help_seconds()
    rss = runs["none"]["peak_rss_mb"]
    export = max(r["export_seconds"] for r in runs.values())
    from tests import tf215_env

    imports = {"2.21 (ours)": _import_rss(sys.executable),
               "2.15 (the estimator's)": _import_rss(tf215_env.python())}
    lines += ["### Resources", "", "| measure | value | target |", "|---|---|---|",
              f"| peak RSS of a training run (cnn, {ACCURACY_MAX_STEPS} steps with evaluations "
              f"and export, fp32) | {rss:,.0f} MB | <= 700 MB ({_met(rss <= 700)}) |",
              f"| the same run in bf16 (keeps a float32 copy for export) | "
              f"{runs['bf16']['peak_rss_mb']:,.0f} MB | |",
              *(f"| RSS after `import tensorflow` alone, TF {version} | {r['rss']:,} MB "
                f"({r['anon']:,} anonymous, {r['file']:,} file-backed) | |"
                for version, r in imports.items()),
              f"| export wall time | {export:.1f} s | <= 10 s ({_met(export <= 10)}) |",
              f"| `python -m trainer.task --help` | {help_seconds:.2f} s | < 0.5 s "
              f"({_met(help_seconds < 0.5)}) |", ""]
    lines += [f"Load average (1/5/15 min) at the start: {load_before}; at the end: {_load()} "
              "(a shared machine: read rates side by side, as ratios).", ""]
    return hardware, "\n".join(lines)


_PREFACE = ("# Benchmarks\n\nOne section per hardware class the benchmark has run on; "
            "`python scripts/benchmark.py` rewrites its own class's section and keeps the "
            "others. Compare numbers within a section only.\n")


def merge_section(existing: str, hardware: str, section: str) -> str:
    """BENCHMARKS.md with `hardware`'s section replaced (or added), the others kept."""
    parts = [p for p in ("\n" + existing).split("\n## ")[1:]]
    kept = [p for p in parts if p.split("\n", 1)[0].strip() != hardware]
    return "\n".join([_PREFACE] + [f"## {p.rstrip()}\n" for p in kept]
                      + [f"## {hardware}\n\n{section.rstrip()}\n"])


def main(argv=None) -> int:
    p = OneLineParser(prog="vertex-trainer benchmark", description=__doc__.split("\n\n")[0],
                      allow_abbrev=False)
    p.add_argument("--train-files", help="comma-separated TFRecord globs (MNIST training set)")
    p.add_argument("--eval-files", help="comma-separated TFRecord globs (the MNIST test set)")
    p.add_argument("--output", default=os.path.join(REPO, "BENCHMARKS.md"))
    p.add_argument("--only", choices=("jpeg", "resnet"),
                   help="measure one section (the encoded-JPEG input pipeline, or resnet20) and "
                        "print its table")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("task_flags", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(json.dumps(CHILDREN[args.child](args)))
        return 0
    start = time.perf_counter()

    def say(message):
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    if args.only == "jpeg":
        print("\n".join(jpeg_section(say)))
        return 0
    if not (args.train_files and args.eval_files):
        p.error("--train-files and --eval-files are required")
    if args.only == "resnet":
        print("\n".join(resnet_section(args, say)))
        return 0
    hardware, section = benchmark(args, say)
    print(f"## {hardware}\n\n{section}")
    existing = ""
    if os.path.exists(args.output):
        with open(args.output, encoding="utf-8") as f:
            existing = f.read()
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(merge_section(existing, hardware, section))
    say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
