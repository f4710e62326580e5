"""What every benchmark section shares: the budget, the run's context, measurements in child
processes, and medians.

Each measurement runs in a fresh Python process (`python -m trainer.benchmarks.child`), so no
TensorFlow state, memory or thread pool carries from one to the next; it gets its keyword
arguments as JSON and prints its result as one JSON line. Within a process the alternatives
are timed in alternating rounds after a warm-up call that includes tracing, and the tables
quote medians: this kind of machine is noisy, so only ratios measured side by side mean much.
No TensorFlow import here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from trainer.errors import TrainerError


@dataclass(frozen=True)
class Budget:
    """How much each section measures. SMOKE only checks that the sections run."""

    rounds: int = 3
    steps_per_call: int = 40  # training steps timed per round
    pipeline_records: int = 60_000
    engine_steps: int = 200  # timed steps per call of our loop against the estimator
    estimator_steps: int = 300
    estimator_warmup: int = 100  # of estimator_steps, not timed
    breakdown_steps: int = 50
    models: tuple[str, ...] = ("dnn", "cnn_small", "cnn", "cnn_bn")
    batches: tuple[int, ...] = (100, 128)
    accuracy_steps: int = 2000
    accuracy_eval_every: int = 250
    jpeg_count: int = 300
    jpeg_batch: int = 64
    jpeg_batches: int = 20
    resnet_accuracy_steps: int = 600
    help_runs: int = 5
    photo_train: int = 20_000  # the user's folder of issue 23: 20,000 small photos
    photo_test: int = 10_000
    photo_batch: int = 128
    photo_steps: int = 1000
    photo_eval_every: int = 100


FULL = Budget()
SMOKE = Budget(rounds=1, steps_per_call=2, pipeline_records=400, engine_steps=3,
               estimator_steps=6, estimator_warmup=2, breakdown_steps=2, models=("dnn",),
               batches=(32,), accuracy_steps=10, accuracy_eval_every=10, jpeg_count=6,
               jpeg_batch=3, jpeg_batches=2, resnet_accuracy_steps=6, help_runs=1,
               photo_train=40, photo_test=20, photo_batch=8, photo_steps=4, photo_eval_every=2)


@dataclass
class Context:
    """One `vertex-trainer benchmark` run, as its sections see it."""

    train_files: str | None
    eval_files: str | None
    budget: Budget
    say: Callable[[str], None]  # a progress line on stderr
    _memo: dict = field(default_factory=dict)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """`make()`'s result, computed once per run: sections share expensive measurements
        (the resources table reads the accuracy section's training runs)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


def child(function: Callable, budget: Budget, **kwargs) -> Any:
    """Runs `function(budget=..., **kwargs)` (a module-level function) in a fresh Python
    process; returns its JSON result."""
    target = f"{function.__module__}:{function.__name__}"
    options = json.dumps({"budget": dataclasses.asdict(budget), **kwargs})
    return run_json([sys.executable, "-m", "trainer.benchmarks.child", target, options], target)


def run_json(argv: list[str], what: str) -> Any:
    """Runs a measuring process and parses the JSON line it ends its output with. A failure is
    one line; the process's whole stderr goes to a log file that the line names."""
    proc = subprocess.run(argv, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    with tempfile.NamedTemporaryFile("w", prefix="benchmark-", suffix=".log", delete=False,
                                     encoding="utf-8") as log:
        log.write(proc.stderr)
    last = next((line.strip() for line in reversed(proc.stderr.splitlines()) if line.strip()),
                "no output")
    raise TrainerError(f"benchmark step {what} failed (exit {proc.returncode}): "
                       f"{last.removeprefix('error: ')} (its output: {log.name})")


def alternate(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each run once to warm up (tracing, page cache, thread pools), then `rounds` rounds of
    all of them in turn: {name: [value per round]}."""
    for run in runs.values():
        run()
    values: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            values[name].append(run())
    return values


def medians(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(v) for name, v in values.items()}


def clock() -> Callable[[str], None]:
    """A `say` that stamps each progress line with the seconds since the run started."""
    start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    return say
