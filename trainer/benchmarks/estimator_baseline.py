"""The seed's engine, for the benchmark's estimator section only: the tutorials' `cnn` as a
classic tf.estimator.

Runs under TensorFlow 2.15 (the last with tf.estimator; trainer/benchmarks/tf215_env.py builds
it) as a script, never under the trainer's TensorFlow. The 2.15 environment has no trainer, and
putting the folder that holds ours on its path would bring TF 2.21 with it, so of `trainer` it
loads only the package itself and its pure `cli` (one-line errors, exit codes). Same
records (the `current` schema: raw uint8 `image`, int64 `label`), same model
(conv32-conv64-dense1024-dropout 0.4, Adam 1e-3), same batch as `vertex-trainer train --model
cnn`; the estimator's default RunConfig, as the seed ran it. Prints one JSON line: steady-state
examples/s (steps after --warmup-steps) and the process's peak RSS.

    <tf215 python> trainer/benchmarks/estimator_baseline.py --train-files '/tmp/mnist/train-*'
"""

import importlib.util
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402  (after the log level)

v1 = tf.compat.v1


def _load_trainer_package() -> None:
    """`trainer` from this file's package folder alone (its submodules found there only)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "trainer", os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
    sys.modules["trainer"] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_load_trainer_package()
from trainer.cli import OneLineParser, run_cli  # noqa: E402  (after the package is loaded)
from trainer.errors import TrainerError  # noqa: E402


def input_fn(patterns: str, batch_size: int):
    files = sorted(f for p in patterns.split(",") for f in tf.io.gfile.glob(p))
    if not files:
        raise TrainerError(f"--train-files: no file matches {patterns}")
    compression = "GZIP" if files[0].endswith(".gz") else ""

    def parse(serialized):
        features = tf.io.parse_example(serialized, {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)})
        images = tf.io.decode_raw(features["image"], tf.uint8)
        images = tf.reshape(tf.cast(images, tf.float32) / 255.0, [-1, 28, 28, 1])
        return images, tf.cast(features["label"], tf.int32)

    return lambda: (tf.data.TFRecordDataset(files, compression, num_parallel_reads=len(files))
                    .shuffle(10_000).repeat().batch(batch_size, drop_remainder=True)
                    .map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(1))


def model_fn(features, labels, mode):
    training = mode == tf.estimator.ModeKeys.TRAIN
    x = features
    for filters in (32, 64):
        x = v1.layers.conv2d(x, filters, 5, padding="same", activation=tf.nn.relu)
        x = v1.layers.max_pooling2d(x, 2, 2)
    x = v1.layers.dense(v1.layers.flatten(x), 1024, activation=tf.nn.relu)
    x = v1.layers.dropout(x, rate=0.4, training=training)
    logits = v1.layers.dense(x, 10)
    loss = v1.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)
    train_op = v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=v1.train.get_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


class SteadyClock(tf.estimator.SessionRunHook):
    """Times the steps after the warm-up (graph building, first steps, page cache)."""

    def __init__(self, warmup: int, steps: int):
        self._warmup, self._steps, self._done = warmup, steps, 0
        self.seconds = 0.0

    def after_run(self, run_context, run_values):
        self._done += 1
        if self._done == self._warmup:
            self._start = time.perf_counter()
        elif self._done == self._steps:
            self.seconds = time.perf_counter() - self._start


def main(argv=None) -> int:
    def body():
        p = OneLineParser(prog="estimator_baseline.py", description=__doc__.split("\n\n")[0],
                          allow_abbrev=False)
        p.add_argument("--train-files", required=True)
        p.add_argument("--steps", type=int, default=400)
        p.add_argument("--warmup-steps", type=int, default=100)
        p.add_argument("--batch-size", type=int, default=100)
        args = p.parse_args(argv)
        if not 0 < args.warmup_steps < args.steps:
            raise TrainerError(f"--warmup-steps must be in (0, --steps {args.steps}), got "
                               f"{args.warmup_steps}")
        v1.logging.set_verbosity(v1.logging.ERROR)
        clock = SteadyClock(args.warmup_steps, args.steps)
        train = input_fn(args.train_files, args.batch_size)
        with tempfile.TemporaryDirectory(prefix="estimator-") as model_dir:
            estimator = tf.estimator.Estimator(model_fn, model_dir=model_dir)
            estimator.train(train, steps=args.steps, hooks=[clock])
        timed = args.steps - args.warmup_steps
        print(json.dumps({"examples_per_sec": timed * args.batch_size / clock.seconds,
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "tensorflow": tf.__version__}))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
