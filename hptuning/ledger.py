"""What the study records about its trials (Optuna's SQLite study), and what it is told.

A launched trial carries its parameters as the user attribute `params`; the tuner tells Optuna a
finished trial's score or its failure. Why a trial failed or was stopped early is kept in the
study's own attributes, because a trial's cannot change once it is told. On opening, the ledger
reads a resumed study back: trials left running (to restart under their ids), trials asked but
never launched (their sample goes to the next trial), counts, the best trial, and the curves of
the completed trials that the stopping rules compare with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from hptuning import measurements, results, search
from hptuning.spec import TuningSpec
from hptuning.trials import TrialProcess, trial_dir, trial_id

_STATES = {optuna.trial.TrialState.COMPLETE: results.SUCCEEDED,
           optuna.trial.TrialState.FAIL: results.FAILED,
           optuna.trial.TrialState.RUNNING: results.ACTIVE}


@dataclass(frozen=True)
class Outcome:
    """A finished trial, as the progress table shows it."""

    event: str  # succeeded | stopped early | failed
    value: float | str = ""
    step: int | str = ""
    details: str = ""


class Ledger:
    def __init__(self, spec: TuningSpec, study: optuna.Study, output_dir: Path):
        self.spec, self.study, self.output_dir = spec, study, output_dir
        trials = study.get_trials(deepcopy=False)
        self.stored = len(trials)
        self.to_restart: list[tuple[int, dict]] = []
        for t in trials:
            if t.state != optuna.trial.TrialState.RUNNING:
                continue
            if "params" in t.user_attrs:
                self.to_restart.append((t.number, t.user_attrs["params"]))
            else:  # asked, never launched: give its sample to the next trial
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                if t.params:
                    study.enqueue_trial(t.params)
        launched = [t for t in trials if "params" in t.user_attrs]
        self.launched = len(launched)
        self.failed = sum(t.state == optuna.trial.TrialState.FAIL for t in launched)
        self.best: tuple[str, float] | None = None
        self.curves: list[list[measurements.Measurement]] = []  # of the completed trials
        for t in launched:
            if t.state == optuna.trial.TrialState.COMPLETE:
                self._note_best(trial_id(t.number), t.value)
                if _stopped_key(trial_id(t.number)) not in study.user_attrs:
                    self.curves.append(self.measurements(trial_id(t.number)))

    def failed_out(self) -> bool:
        """maxFailedTrialCount trials have failed (0: no limit)."""
        return 0 < self.spec.max_failed <= self.failed

    def measurements(self, trial: str) -> list[measurements.Measurement]:
        return measurements.read(trial_dir(self.output_dir, trial) / "metrics", self.spec.metric)

    def ask(self) -> tuple[int, dict]:
        """A new trial from the sampler: (its number, its parameters), recorded as launched."""
        trial = self.study.ask()
        params = search.suggest(trial, self.spec)
        trial.set_user_attr("params", params)
        self.launched += 1
        return trial.number, params

    def finish(self, trial: TrialProcess) -> Outcome:
        """Tells the study how the trial ended: stopped early and scored by the measurements it
        made, succeeded (exit 0 with a metric), or failed."""
        final = measurements.select(self.measurements(trial.trial_id), self.spec.maximize,
                                    self.spec.selection)
        if trial.stop_reason is not None and final is not None:
            self.study.set_user_attr(_stopped_key(trial.trial_id), trial.stop_reason)
            self.study.tell(trial.number, final.value)
            return Outcome("stopped early", final.value, final.step,
                           self._best_details(trial.trial_id, final.value))
        if trial.process.returncode == 0 and final is not None:
            self.study.tell(trial.number, final.value)
            self.curves.append(self.measurements(trial.trial_id))
            return Outcome("succeeded", final.value, final.step,
                           self._best_details(trial.trial_id, final.value))
        reason = trial.failure(self.spec.metric)
        self.study.set_user_attr(_failure_key(trial.trial_id), reason)
        self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        self.failed += 1
        return Outcome("failed", details=reason)

    def _best_details(self, trial: str, value: float) -> str:
        return "best so far" if self._note_best(trial, value) else f"best: trial {self.best[0]}"

    def _note_best(self, trial: str, value: float) -> bool:
        better = self.best is None or (value > self.best[1] if self.spec.maximize
                                       else value < self.best[1])
        if better:
            self.best = (trial, value)
        return better

    def results(self) -> list[results.TrialResult]:
        """A row per launched trial, from the study and the trials' metric files."""
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if "params" not in t.user_attrs:
                continue
            trial = trial_id(t.number)
            directory = trial_dir(self.output_dir, trial)
            final = measurements.select(self.measurements(trial), self.spec.maximize,
                                        self.spec.selection)
            state = _STATES[t.state]
            stopped_early = self.study.user_attrs.get(_stopped_key(trial))
            if stopped_early:
                state = results.STOPPED_EARLY
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if (
                t.datetime_complete and t.datetime_start) else None
            model_dir = directory / "model"
            rows.append(results.TrialResult(
                trial_id=trial, state=state, parameters=t.user_attrs["params"],
                value=t.value if state in results.SCORED else None,
                step=final.step if final and state in results.SCORED else None,
                seconds=seconds, model_dir=str(model_dir) if model_dir.exists() else "",
                reason=stopped_early or self.study.user_attrs.get(_failure_key(trial), "")))
        return rows


def _failure_key(trial: str) -> str:
    return f"trial {trial} failure"


def _stopped_key(trial: str) -> str:
    return f"trial {trial} stopped early"
