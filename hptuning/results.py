"""A study's results: the trials table (CSV and JSON), the best trial, and a plot (PNG)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from hptuning.spec import Param, TuningSpec

SUCCEEDED, FAILED, ACTIVE = "SUCCEEDED", "FAILED", "ACTIVE"  # ACTIVE: stopped, resumes next run
STOPPED_EARLY = "STOPPED_EARLY"  # by the stopping rule: scored by the measurements it made
SCORED = (SUCCEEDED, STOPPED_EARLY)


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    state: str
    parameters: dict
    value: float | None = None  # the final measurement's
    step: int | None = None
    seconds: float | None = None
    model_dir: str = ""
    reason: str = ""  # why it failed or was stopped early


def best(trials: list[TrialResult], maximize: bool) -> TrialResult | None:
    """The scored trial with the best final measurement (the lowest id among equals)."""
    done = [t for t in trials if t.state in SCORED]
    if not done:
        return None
    sign = -1 if maximize else 1
    return min(done, key=lambda t: (sign * t.value, int(t.trial_id)))


def write(spec: TuningSpec, trials: list[TrialResult], output_dir: Path) -> list[Path]:
    """results.csv, results.json and plot.png in output_dir; returns their paths."""
    paths = [output_dir / "results.csv", output_dir / "results.json", output_dir / "plot.png"]
    _write_csv(spec, trials, paths[0])
    winner = best(trials, spec.maximize)
    summary = {
        "config": spec.source, "metric": spec.metric,
        "goal": "MAXIMIZE" if spec.maximize else "MINIMIZE",
        "measurementSelection": f"{spec.selection.upper()}_MEASUREMENT",
        "algorithm": spec.algorithm,
        "bestTrial": winner.trial_id if winner else None,
        "trials": [asdict(t) for t in trials],
    }
    paths[1].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot(spec, trials, paths[2])
    return paths


def parameter_ids(spec: TuningSpec) -> list[str]:
    """Every parameterId once, parents before their conditional parameters."""
    ids: list[str] = []

    def visit(params):
        for param in params:
            if param.id not in ids:
                ids.append(param.id)
            visit([c.param for c in param.children])

    visit(spec.params)
    return ids


def _write_csv(spec: TuningSpec, trials: list[TrialResult], path: Path) -> None:
    ids = parameter_ids(spec)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["trial_id", "state", spec.metric, "step", "seconds", *ids, "model_dir",
                         "reason"])
        for t in trials:
            writer.writerow([t.trial_id, t.state, "" if t.value is None else t.value,
                             "" if t.step is None else t.step,
                             "" if t.seconds is None else round(t.seconds, 1),
                             *(t.parameters.get(i, "") for i in ids), t.model_dir, t.reason])


def _scales(params: tuple[Param, ...], out: dict) -> dict:
    """parameterId -> 'categorical' or whether any of its specs is log-scaled."""
    for param in params:
        if param.kind == "categorical":
            out[param.id] = "categorical"
        elif out.get(param.id) != "log":
            out[param.id] = "log" if param.scale != "linear" else "linear"
        _scales(tuple(c.param for c in param.children), out)
    return out


def plot(spec: TuningSpec, trials: list[TrialResult], path: Path) -> None:
    """The metric per trial, then against each parameter; failed trials have no point,
    trials stopped early a grey cross."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ids = parameter_ids(spec)
    scales = _scales(spec.params, {})
    done = [t for t in trials if t.state in SCORED]
    stopped = [t for t in done if t.state == STOPPED_EARLY]
    winner = best(trials, spec.maximize)
    panels = 1 + len(ids)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.5 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    goal = "max" if spec.maximize else "min"
    figure.suptitle(f"{Path(spec.source).name}: {spec.metric} ({goal}), "
                    f"{len(done)} of {len(trials)} trials scored"
                    + (f", {len(stopped)} stopped early" if stopped else ""))

    ax = axes[0]
    ax.plot([int(t.trial_id) for t in done], [t.value for t in done], "o-", color="tab:blue")
    if stopped:
        ax.plot([int(t.trial_id) for t in stopped], [t.value for t in stopped], "x",
                color="tab:gray", markersize=10, label="stopped early")
    if winner:
        ax.plot([int(winner.trial_id)], [winner.value], "*", color="tab:red", markersize=14,
                label=f"best: trial {winner.trial_id}")
    if winner or stopped:
        ax.legend()
    ax.set(xlabel="trial", ylabel=spec.metric, title=f"{spec.metric} per trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    for ax, parameter in zip(axes[1:], ids):
        points = [(t.parameters[parameter], t.value, t is winner) for t in done
                  if parameter in t.parameters]
        if scales[parameter] == "categorical":
            labels = list(dict.fromkeys(str(x) for x, _, _ in points))
            ax.set_xticks(range(len(labels)), labels)
            xs = [labels.index(str(x)) for x, _, _ in points]
        else:
            xs = [x for x, _, _ in points]
            if scales[parameter] == "log":
                ax.set_xscale("log")
        early = [t.state == STOPPED_EARLY for t in done if parameter in t.parameters]
        ax.scatter(xs, [y for _, y, _ in points], c=[
            "tab:red" if w else "tab:gray" if e else "tab:blue"
            for (_, _, w), e in zip(points, early)])
        ax.set(xlabel=parameter, ylabel=spec.metric, title=f"{spec.metric} vs {parameter}")
    for ax in axes[panels:]:
        ax.set_visible(False)
    figure.savefig(path, dpi=100)
