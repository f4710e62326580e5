"""The input pipeline: records/s of the trainer's training path (shuffle, batch, parse) against
a plain read of the same TFRecords, batch 100."""

from __future__ import annotations

import time

from trainer.benchmarks import loops, runner
from trainer.benchmarks.markdown import met


def measure(budget: runner.Budget, train_files: str) -> dict:
    import tensorflow as tf

    from trainer import data

    source = loops.source(train_files)
    batches = budget.pipeline_records // 100

    def trainer_pipeline():
        return data.make_dataset(source, batch_size=100, training=True, shuffle_buffer=10_000,
                                 seed=1).take(batches)

    def raw_read():
        return tf.data.TFRecordDataset(list(source.files), source.compressions[0],
                                       num_parallel_reads=len(source.files)).repeat().batch(
            100).take(batches)

    def rate(make):
        def timed():
            start = time.perf_counter()
            records = sum(int(tf.shape(batch[1] if isinstance(batch, tuple) else batch)[0])
                          for batch in make())
            return records / (time.perf_counter() - start)
        return timed

    return runner.alternate({"trainer": rate(trainer_pipeline), "raw": rate(raw_read)},
                            budget.rounds)


def run(ctx: runner.Context) -> list[str]:
    ctx.say("input pipeline ...")
    rates = runner.medians(runner.child(measure, ctx.budget, train_files=ctx.train_files))
    ratio = rates["trainer"] / rates["raw"]
    return ["### Input pipeline (batch 100, training path)", "",
            "| pipeline | records/s |", "|---|---|",
            f"| trainer `make_dataset` (shuffle, batch, parse) | {rates['trainer']:,.0f} |",
            f"| raw TFRecord read of the same files | {rates['raw']:,.0f} |",
            f"| ratio (target >= 0.8) | {ratio:.2f} ({met(ratio >= 0.8)}) |"]
