"""The local tuner's log: the study's header, then a line per trial event, then the outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TextIO

from hptuning.flags import flag_text
from hptuning.results import TrialResult
from hptuning.spec import TuningSpec

_ALGORITHM_NAMES = {"bayesian": "Bayesian (Optuna TPE)", "grid": "grid search",
                    "random": "random search"}
_NOT_LOCAL = {"convex_automated_stopping_spec": "convexAutomatedStoppingSpec",
              "study_stopping_config": "studyStoppingConfig"}


class Progress:
    def __init__(self, spec: TuningSpec, out: TextIO):
        self.spec, self.out = spec, out

    def header(self, trials: int, parallel_reason: str, output_dir: Path, launched: int,
               failed: int, to_restart: int) -> None:
        spec = self.spec
        goal = "maximize" if spec.maximize else "minimize"
        self.line(f"study {spec.source}: {_ALGORITHM_NAMES[spec.algorithm]}, {goal} "
                  f"{spec.metric} ({spec.selection} measurement), {trials} trials, "
                  f"{spec.parallel} at a time ({parallel_reason}), in {output_dir}")
        for field, name in _NOT_LOCAL.items():
            if field in spec.job.study_spec:
                self.line(f"note: studySpec.{name} applies on Vertex only")
        if launched:
            self.line(f"resuming: {launched - to_restart} trial(s) finished ({failed} failed), "
                      f"{to_restart} to restart")
        self.line(f"{'trial':>5}  {'event':<9}  {spec.metric:>10}  {'step':>6}  "
                  f"{'secs':>6}  details")

    def started(self, trial_id: str, params: dict, restarted: bool) -> None:
        self.row(trial_id, "restarted" if restarted else "started",
                 details=" ".join(f"{k}={_show(v)}" for k, v in params.items()))

    def row(self, trial_id: str, event: str, value="", step="", secs="", details="") -> None:
        value = f"{value:.6g}" if isinstance(value, float) else value
        secs = f"{secs:.1f}" if isinstance(secs, float) else secs
        self.line(f"{trial_id:>5}  {event:<9}  {value:>10}  {step!s:>6}  {secs:>6}  {details}")

    def best(self, winner: TrialResult) -> None:
        flags = " ".join(f"--{k}={flag_text(v)}" for k, v in winner.parameters.items())
        self.line(f"best trial {winner.trial_id}: {self.spec.metric} {winner.value:.6g} at "
                  f"step {winner.step}; {flags}")
        self.line(f"best model: {winner.model_dir or '(none exported)'}")

    def results(self, paths: Sequence[Path]) -> None:
        self.line("results: " + ", ".join(str(p) for p in paths))

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
