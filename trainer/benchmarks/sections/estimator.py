"""Our loop against the seed's engine: the tutorials' `cnn` as a classic tf.estimator under
TensorFlow 2.15 (trainer/benchmarks/estimator_baseline.py), batch 100, the same TFRecords, in
fp32 and in what `--mixed-precision auto` picks here; the two alternate process by process."""

from __future__ import annotations

import os
import statistics

from trainer.benchmarks import loops, runner, tf215_env
from trainer.benchmarks.markdown import each, met
from trainer.errors import TrainerError

_BASELINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "estimator_baseline.py")


def measure_loop(budget: runner.Budget, train_files: str) -> dict:
    """Our loop on the estimator's job (cnn, batch 100) in fp32 and in what `auto` picks here;
    one warm-up call each, then budget.engine_steps steps timed per call."""
    from trainer import distribute, precision

    auto = precision.choose("auto", distribute.device_facts(on_tpu=False))
    source = loops.source(train_files)
    variants = {"fp32": loops.LoopVariant(source, "cnn", 100, "none", budget.engine_steps),
                "auto": loops.LoopVariant(source, "cnn", 100, auto.precision,
                                          budget.engine_steps)}
    rates = runner.alternate({name: v.run for name, v in variants.items()}, rounds=1)
    return {**{name: r[0] for name, r in rates.items()}, "auto_precision": auto.precision,
            "auto_reason": auto.reason}


def python215() -> str:
    """The TF 2.15 interpreter, its environment built on first use."""
    try:
        return tf215_env.python()
    except tf215_env.EnvironmentBuildError as err:
        raise TrainerError(f"the TensorFlow {tf215_env.VERSION} environment: "
                           f"{str(err).splitlines()[0]}") from None


def measure_estimator(budget: runner.Budget, train_files: str) -> dict:
    """The seed's engine under TF 2.15, in its own process."""
    return runner.run_json(
        [python215(), _BASELINE, "--train-files", train_files, "--steps",
         str(budget.estimator_steps), "--warmup-steps", str(budget.estimator_warmup)],
        "estimator_baseline.py")


def run(ctx: runner.Context) -> list[str]:
    budget = ctx.budget
    rounds = []
    for index in range(budget.rounds):
        ctx.say(f"tf.estimator (TF 2.15) vs our loop, round {index + 1}/{budget.rounds} ...")
        rounds.append((measure_estimator(budget, ctx.train_files),
                       runner.child(measure_loop, budget, train_files=ctx.train_files)))
    estimator = statistics.median(e["examples_per_sec"] for e, _ in rounds)
    fp32 = statistics.median(o["fp32"] for _, o in rounds)
    auto = statistics.median(o["auto"] for _, o in rounds)
    precision = rounds[0][1]["auto_precision"]
    timed = budget.estimator_steps - budget.estimator_warmup
    return [
        "### Against the seed's engine: `cnn`, batch 100, same TFRecords", "",
        f"tf.estimator on TensorFlow {rounds[0][0]['tensorflow']} (estimator_baseline.py, "
        f"default RunConfig) and our loop alternate process by process, {budget.rounds} "
        f"rounds; each times {timed} steady-state steps after a warm-up. `auto` chose "
        f"{precision} here ({rounds[0][1]['auto_reason']}).", "",
        "| engine | examples/s (median) | rounds | / estimator | target |", "|---|---|---|---|---|",
        f"| tf.estimator fp32 | {estimator:,.0f} | "
        f"{each(e['examples_per_sec'] for e, _ in rounds)} | 1.00 | |",
        f"| our loop fp32 | {fp32:,.0f} | {each(o['fp32'] for _, o in rounds)} | "
        f"{fp32 / estimator:.2f} | >= 1.2 ({met(fp32 / estimator >= 1.2)}) |",
        f"| our loop `auto` ({precision}) | {auto:,.0f} | "
        f"{each(o['auto'] for _, o in rounds)} | {auto / estimator:.2f} | "
        + (f">= 2 where the CPU has native bf16 ({met(auto / estimator >= 2)})"
           if precision == "bf16" else "(no native bf16: auto is fp32)") + " |",
        f"| estimator peak RSS (training only, {budget.estimator_steps} steps) | "
        f"{statistics.median(e['peak_rss_mb'] for e, _ in rounds):,.0f} MB | | | |"]
