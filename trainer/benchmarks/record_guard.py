"""What the TFRecord guard costs: training input throughput over one epoch, with and without it.

    python -m trainer.benchmarks.record_guard [--records 60000] [--rounds 5] [--train-files GLOB]

Writes MNIST-shaped datasets to a scratch folder (raw pixels in 8 plain files, the same in 8
GZIP files, and PNG-encoded images), inspects each once, then times in alternating rounds in one
process: one epoch of the training input pipeline (`make_dataset`, batch 100, the default
shuffle buffer); the guard walking every file as a first run does (`record_guard.verify`,
nothing remembered); and the guard as later runs and other processes find it (the walk
remembered beside the files: a stat per file and a small JSON read). Prints the medians and what
each guard adds to the epoch, with the CPU and the load average. `--train-files` adds a dataset
of your own (measured in place: its remembered walk is written beside it).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from trainer.cli import OneLineParser, run_cli

BATCH = 100
SHUFFLE_BUFFER = 10_000  # --shuffle-buffer's default
SHARDS = 8


def _write(folder: str, name: str, serialized, count: int, compression: str) -> str:
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type=compression)
    for shard in range(SHARDS):
        path = os.path.join(folder, f"{name}-{shard:05d}-of-{SHARDS:05d}.tfrecord")
        with tf.io.TFRecordWriter(path, options) as writer:
            for index in range(shard, count, SHARDS):
                writer.write(serialized(index))
    return os.path.join(folder, f"{name}-*")


def datasets(scratch: str, count: int) -> list[tuple[str, str]]:
    """(what, glob) of the three written datasets."""
    import numpy as np
    import tensorflow as tf

    from trainer import records
    from trainer.data import encoded_records

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8)  # reused: size is what counts

    def raw(index):
        return records.serialize_example(pixels[index % 1000].tobytes(), index % 10, 28, 28, 1)

    encoded = [tf.io.encode_png(image).numpy() for image in pixels]

    def png(index):
        return tf.train.Example(features=tf.train.Features(feature={
            encoded_records.ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[encoded[index % 1000]])),
            encoded_records.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(
                value=[index % 10]))})).SerializeToString()

    return [("raw pixels, plain", _write(os.path.join(scratch, "plain"), "raw", raw, count, "")),
            ("raw pixels, GZIP", _write(os.path.join(scratch, "gzip"), "raw", raw, count, "GZIP")),
            ("PNG-encoded", _write(os.path.join(scratch, "png"), "png", png, count // 4, ""))]


def _epoch(source) -> float:
    """Seconds for one epoch of the training input pipeline."""
    from trainer import data

    dataset = data.make_dataset(source, batch_size=BATCH, training=True,
                                shuffle_buffer=SHUFFLE_BUFFER, seed=1).take(source.size // BATCH)
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


def measure(pattern: str, rounds: int) -> dict:
    """Median seconds of the epoch alone, and of the guard's walk and remembered check."""
    from trainer import data
    from trainer.data import record_guard

    source = data.inspect_input((pattern,), "--train-files", (28, 28, 1), 10)

    def guard(remember: bool) -> float:
        record_guard.forget()  # as a new process
        start = time.perf_counter()
        record_guard.verify(source.files, source.compressions, "--train-files",
                            remember=remember)
        return time.perf_counter() - start

    _epoch(source)  # warm-up: tracing, page cache
    times = {"epoch": [], "walk": [], "check": []}
    for _ in range(rounds):
        times["epoch"].append(_epoch(source))
        times["walk"].append(guard(remember=False))
        times["check"].append(guard(remember=True))
    return {"records": source.size, "megabytes": sum(
        os.path.getsize(f) for f in source.files) / 1e6,
            **{kind: statistics.median(values) for kind, values in times.items()}}


def section(patterns: list[tuple[str, str]], rounds: int) -> list[str]:
    from trainer.precision import cpu_model

    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        cpu = cpu_model(f.read())
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    lines = ["### TFRecord guard: training input over one epoch", "",
             f"{cpu}, {os.cpu_count()} CPUs; load average at the start {load}; medians of "
             f"{rounds} alternating rounds; batch {BATCH}, shuffle buffer {SHUFFLE_BUFFER:,}. "
             "Epoch: input records/s of one epoch alone; walk: the guard reading every file "
             "(a first run); check: the guard finding the walk remembered (later runs).", "",
             "| data | records | MB | epoch | walk | epoch + walk | check | epoch + check |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for what, pattern in patterns:
        found = measure(pattern, rounds)

        def with_guard(seconds):
            rate = found["records"] / (found["epoch"] + seconds)
            return f"{rate:,.0f}/s ({seconds / found['epoch']:+.1%} time)"

        lines.append(f"| {what} | {found['records']:,} | {found['megabytes']:,.1f} | "
                     f"{found['records'] / found['epoch']:,.0f}/s | {found['walk']:.3f} s | "
                     f"{with_guard(found['walk'])} | {found['check'] * 1000:.1f} ms | "
                     f"{with_guard(found['check'])} |")
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    return lines + ["", f"Load average at the end: {load}."]


def main(argv=None) -> int:
    def body():
        p = OneLineParser(prog="python -m trainer.benchmarks.record_guard", allow_abbrev=False,
                          description=__doc__.split("\n\n")[0])
        p.add_argument("--records", type=int, default=60_000,
                       help="records of each written raw dataset (a quarter for PNG)")
        p.add_argument("--rounds", type=int, default=5)
        p.add_argument("--train-files", help="a TFRecord glob of your own, measured too")
        args = p.parse_args(argv)
        if args.records < 4 * BATCH or args.rounds < 1:
            p.error(f"--records must be at least {4 * BATCH} and --rounds at least 1")
        with tempfile.TemporaryDirectory() as scratch:
            patterns = datasets(scratch, args.records)
            if args.train_files:
                patterns.append((args.train_files, args.train_files))
            print("\n".join(section(patterns, args.rounds)))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
