"""A trial's measurements, from the files cloudml-hypertune writes, and the one that scores it.

cloudml-hypertune rewrites $CLOUD_ML_HP_METRIC_FILE after every report: JSON lines with values
as strings, `{"timestamp": ..., "trial": "7", "loss": "0.31", "global_step": "100", ...}`, the
last 100 kept. A trial the tuner restarted (after the tuner itself was stopped) starts a fresh
file, so earlier attempts' files are kept beside it and read first.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

METRIC_FILE = "output.metrics"
_ATTEMPT = re.compile(r"attempt-(\d+)\.metrics$")


@dataclass(frozen=True)
class Measurement:
    step: int
    value: float


def attempt_files(metrics_dir: Path) -> list[Path]:
    """Earlier attempts' files in order, then the current one (those that exist)."""
    attempts = sorted((int(m.group(1)), p) for p in metrics_dir.glob("attempt-*.metrics")
                      if (m := _ATTEMPT.search(p.name)))
    current = metrics_dir / METRIC_FILE
    return [p for _, p in attempts] + ([current] if current.exists() else [])


def keep_attempt(metrics_dir: Path) -> None:
    """Moves the current file aside before a restarted attempt overwrites it."""
    current = metrics_dir / METRIC_FILE
    if current.exists():
        earlier = len(attempt_files(metrics_dir)) - 1
        current.rename(metrics_dir / f"attempt-{earlier}.metrics")


def read(metrics_dir: Path, metric: str) -> list[Measurement]:
    """Every finite `metric` report, in order. Lines that are not JSON objects (a file cut short
    by a killed trainer) and reports of other metrics are skipped."""
    measurements = []
    for path in attempt_files(metrics_dir):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                report = json.loads(line)
                value = float(report[metric])
                step = int(float(report.get("global_step") or 0))
            except (ValueError, TypeError, KeyError):
                continue
            if math.isfinite(value):
                measurements.append(Measurement(step, value))
    return measurements


def select(measurements: list[Measurement], maximize: bool, selection: str) -> Measurement | None:
    """The trial's final measurement: the last one, or the best for the goal (the earliest of
    equals), as Vertex's LAST_MEASUREMENT / BEST_MEASUREMENT."""
    if not measurements:
        return None
    if selection == "last":
        return measurements[-1]
    best = max if maximize else min
    return best(measurements, key=lambda m: m.value)
