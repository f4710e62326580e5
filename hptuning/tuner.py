"""The local tuner: runs a tuning config's study on this machine, trial by trial as Vertex does.

Each trial is `python -m trainer.task <trainer args> --<parameterId>=<value> ...` in its own
process (hptuning.trials), where the trainer args are the config's
`trialJobSpec.workerPoolSpecs[0].containerSpec.args` (or `pythonPackageSpec.args`) plus any
given after `--`: the installed trainer stands in for the image or package, with the
environment Vertex gives a trial. Up to parallelTrialCount trials run at once; the other
replicas and worker pools of trialJobSpec only apply on Vertex.

This module schedules: it opens the study, keeps the trial slots full (restarting interrupted
trials first, then asking the sampler), collects finished trials and stops the rest when the
study fails or the tuner is stopped. hptuning.ledger records trials in the study,
hptuning.early_stopping applies the stopping rule, hptuning.progress writes the log.

Output directory:
    study.db                    the Optuna study (SQLite); trial id = Optuna trial number + 1
    trials/<id>/trial.log       the trial's command line and output
    trials/<id>/metrics/output.metrics, model/, checkpoints/, logs/
    results.csv, results.json, plot.png

A trial succeeds when the trainer exits 0 having reported the metric; its score is the last or
the best report (measurementSelectionType, unset = last). maxFailedTrialCount: the study stops,
exit 1, once that many trials have failed; 0 (Vertex: "Vertex AI decides") sets no limit here,
and the study fails only if no trial succeeds.

Resuming: the study lives in study.db, so running the same command again continues it. Finished
trials are never rerun. Trials left running by a stopped or killed tuner are restarted under
their own ids and trial directories, so the trainer resumes them from their checkpoints
(earlier metric files are kept, see hptuning.measurements). maxTrialCount may be raised between
runs; a changed search space or trainer args need a new output directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

import optuna
from google.cloud.aiplatform_v1.types import StudySpec

from hptuning import results, search, stopping, trials
from hptuning.early_stopping import EarlyStopping
from hptuning.flags import trainer_max_steps
from hptuning.ledger import Ledger
from hptuning.progress import Progress
from hptuning.spec import TuningSpec
from trainer.errors import TrainerError

STUDY_NAME = "vertex-trainer"
_POLL_SECS = 0.2


def run_study(spec: TuningSpec, output_dir: str | Path, seed: int | None = None,
              trainer=trials.TRAINER, out: TextIO = sys.stdout,
              parallel_reason: str = "parallelTrialCount") -> int:
    """Runs (or resumes) the study, spec.parallel trials at a time (`parallel_reason` says why,
    in the log); returns the exit code: 0 done, 1 the study failed, 130 stopped by
    SIGINT/SIGTERM. Raises TrainerError for a directory it cannot use."""
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(output_dir):
        study = _open_study(spec, output_dir)
        return _StudyRun(spec, study, output_dir, seed, trainer, out, parallel_reason).run()


@contextlib.contextmanager
def _exclusive(output_dir: Path):
    with open(output_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainerError(f"{output_dir}: another tuner is running this study") from None
        yield


def _fingerprint(spec: TuningSpec) -> str:
    """What makes trials comparable: the search space, metric and trainer args."""
    what = {"studySpec": StudySpec.to_dict(spec.job.study_spec),
            "trainerArgs": list(spec.trainer_args)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _open_study(spec: TuningSpec, output_dir: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{output_dir / 'study.db'}", study_name=STUDY_NAME,
        direction="maximize" if spec.maximize else "minimize", load_if_exists=True)
    fingerprint = study.user_attrs.get("fingerprint")
    if fingerprint is None:
        study.set_user_attr("fingerprint", _fingerprint(spec))
        study.set_user_attr("config", spec.source)
    elif fingerprint != _fingerprint(spec):
        raise TrainerError(
            f"{output_dir}: holds a study of {study.user_attrs.get('config')} with another "
            "search space, metric or trainer args; use a new --output-dir")
    return study


def _trial_limit(spec: TuningSpec) -> int:
    """maxTrialCount, or the grid's size when that is smaller."""
    if spec.algorithm != "grid":
        return spec.max_trials
    try:
        return min(spec.max_trials, len(search.grid(spec.params)))
    except ValueError as err:
        raise TrainerError(f"{spec.source}: studySpec.parameters: {err}; the local tuner "
                           "enumerates it, use fewer values") from None


def _tuned(params):
    """The parameterIds of the search space, conditional ones included."""
    for param in params:
        yield param.id
        for condition in param.children:
            yield from _tuned((condition.param,))


class _StudyRun:
    def __init__(self, spec: TuningSpec, study: optuna.Study, output_dir: Path,
                 seed: int | None, trainer, out: TextIO, parallel_reason: str):
        self.spec, self.output_dir, self.trainer = spec, output_dir, trainer
        self.parallel_reason = parallel_reason
        self.ledger = Ledger(spec, study, output_dir)
        self.progress = Progress(spec, out)
        self.early_stopping = EarlyStopping(
            stopping.rule_of(spec.job.study_spec, spec.maximize,
                             trainer_max_steps(spec.trainer_args, _tuned(spec.params))),
            self.ledger, self.progress)
        self.limit = _trial_limit(spec)
        study.sampler = search.make_sampler(spec, seed, self.ledger.stored)
        self.running: list[trials.TrialProcess] = []
        self.reported: dict[str, int] = {}  # trial id -> measurements shown as rows so far

    def run(self) -> int:
        ledger = self.ledger
        self.progress.header(self.limit, self.parallel_reason, self.output_dir, ledger.launched,
                             ledger.failed, len(ledger.to_restart))
        previous = signal.signal(signal.SIGTERM, _interrupt)
        stopped = False
        try:
            while True:
                self._fill_slots()
                if ledger.failed_out() and self.running:
                    self._stop_running("the study failed")  # as Vertex cancels them
                if not self.running:
                    break
                time.sleep(_POLL_SECS)
                finished = [t for t in self.running if t.process.poll() is not None]
                self._report_measurements()
                for trial in finished:
                    self.running.remove(trial)
                    outcome = ledger.finish(trial)
                    self.progress.row(trial.trial_id, outcome.event, outcome.value,
                                      outcome.step, trial.seconds, outcome.details)
                self.early_stopping.check(self.running)
        except KeyboardInterrupt:
            stopped = True
            self._stop_running("the tuner was stopped; restarts on the next run")
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self._conclude(stopped)

    def _fill_slots(self) -> None:
        """Launches trials up to spec.parallel: interrupted ones first, then new ones."""
        ledger = self.ledger
        while not ledger.failed_out() and len(self.running) < self.spec.parallel:
            if ledger.to_restart:
                self._launch(*ledger.to_restart.pop(0), restarted=True)
            elif ledger.launched < self.limit:
                self._launch(*ledger.ask())
            else:
                break

    def _report_measurements(self) -> None:
        """A row per new report of a running trial: a trial of thousands of steps is minutes
        between its `started` and `succeeded` rows."""
        for trial in self.running:
            found = self.ledger.measurements(trial.trial_id)
            for measurement in found[self.reported.get(trial.trial_id, 0):]:
                self.progress.row(trial.trial_id, "measured", measurement.value,
                                  measurement.step, trial.seconds)
            self.reported[trial.trial_id] = len(found)

    def _launch(self, number: int, params: dict, restarted: bool = False) -> None:
        # A restarted trial's earlier reports were shown by the run that made them.
        self.reported[trials.trial_id(number)] = len(
            self.ledger.measurements(trials.trial_id(number)))
        directory = trials.trial_dir(self.output_dir, trials.trial_id(number))
        command = trials.trial_command(self.spec, params, self.trainer)
        self.running.append(trials.launch(number, params, directory, command, restarted))
        self.progress.started(trials.trial_id(number), params, restarted)

    def _stop_running(self, why: str) -> None:
        """Stops every running trial; each stays running in the study and restarts from its
        checkpoint on the next run."""
        trials.stop_all(self.running)
        for trial in self.running:
            self.progress.row(trial.trial_id, "stopped", details=why)
        self.running.clear()

    def _conclude(self, stopped: bool) -> int:
        spec, rows = self.spec, self.ledger.results()
        paths = results.write(spec, rows, self.output_dir)
        winner = results.best(rows, spec.maximize)
        if winner:
            self.progress.best(winner)
        self.progress.results(paths)
        if stopped:
            self.progress.line("stopped; run the same command again to resume the study")
            return 130
        if self.ledger.failed_out():
            self.progress.line(f"error: {self.ledger.failed} trials failed (maxFailedTrialCount "
                               f"{spec.max_failed}); see trials/<id>/trial.log")
            return 1
        if winner is None:
            self.progress.line("error: no trial succeeded; see trials/<id>/trial.log")
            return 1
        return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
