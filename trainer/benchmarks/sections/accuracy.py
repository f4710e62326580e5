"""`cnn` on full MNIST: whole `trainer.task` runs to budget.accuracy_steps in bf16 and fp32,
evaluated every budget.accuracy_eval_every steps on the test set: accuracy and training time
per evaluation, and the time to 99%. The resources section reads the same runs (`cnn_runs`)."""

from __future__ import annotations

import os
import resource
import tempfile
import time

from trainer.benchmarks import runner
from trainer.benchmarks.markdown import met

TARGET = 0.99
PRECISIONS = ("bf16", "none")


def measure_run(budget: runner.Budget, task_flags: list[str]) -> dict:
    """A whole `trainer.task` run: evaluations, export, peak RSS, from the run's own result."""
    from trainer import task
    from trainer.config import config_from_flags

    start = time.perf_counter()
    result = task.run(config_from_flags(task_flags, {}))
    evaluations = [{"step": e.step, "accuracy": e.metrics["accuracy"],
                    "train_seconds": e.train_seconds, "seconds": e.seconds}
                   for e in result.evaluations]
    return {"evaluations": evaluations, "export_seconds": result.export_seconds,
            "total_seconds": time.perf_counter() - start, "final": result.metrics,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def cnn_runs(ctx: runner.Context) -> dict:
    """{precision: run}, measured once per benchmark run."""
    return ctx.once("cnn_runs", lambda: _cnn_runs(ctx))


def _cnn_runs(ctx: runner.Context) -> dict:
    budget, runs = ctx.budget, {}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        for precision in PRECISIONS:
            ctx.say(f"cnn on full MNIST to {budget.accuracy_steps} steps, mixed precision "
                    f"{precision} ...")
            runs[precision] = runner.child(measure_run, budget, task_flags=[
                "--train-files", ctx.train_files, "--eval-files", ctx.eval_files,
                "--model", "cnn", "--batch-size", "100", "--max-steps",
                str(budget.accuracy_steps), "--eval-every-steps",
                str(budget.accuracy_eval_every), "--seed", "1", "--mixed-precision", precision,
                "--job-dir", os.path.join(tmp, precision)])
    return runs


def run(ctx: runner.Context) -> list[str]:
    budget, runs = ctx.budget, cnn_runs(ctx)
    lines = [f"### `cnn` on full MNIST (batch 100, eval every {budget.accuracy_eval_every} "
             "steps on the 10k test set)", "",
             "| step | " + " | ".join(f"{p} accuracy | {p} training s" for p in runs) + " |",
             "|---" * (1 + 2 * len(runs)) + "|"]
    for rows in zip(*(r["evaluations"] for r in runs.values())):
        lines.append(f"| {rows[0]['step']} | " + " | ".join(
            f"{e['accuracy']:.2%} | {e['train_seconds']:.1f}" for e in rows) + " |")
    lines.append("")
    for precision, measured in runs.items():
        hit = next((e for e in measured["evaluations"] if e["accuracy"] >= TARGET), None)
        lines.append(f"- mixed precision {precision}: " + (
            f"{TARGET:.1%} at step {hit['step']} after {hit['train_seconds']:.1f} s of "
            f"training (target <= ~50 s: {met(hit['train_seconds'] <= 50)})" if hit else
            f"{TARGET:.1%} not reached in {budget.accuracy_steps} steps (not met)"))
    final = {p: r["evaluations"][-1]["accuracy"] for p, r in runs.items()}
    lines.append(f"- bf16 - fp32 accuracy at step {budget.accuracy_steps}: "
                 f"{100 * (final['bf16'] - final['none']):+.2f} points")
    return lines
