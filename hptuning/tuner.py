"""The local tuner: runs a tuning config's study on this machine, trial by trial as Vertex does.

Each trial is `python -m trainer.task <trainer args> --<parameterId>=<value> ...` in its own
process, where the trainer args are the config's
`trialJobSpec.workerPoolSpecs[0].containerSpec.args` (or `pythonPackageSpec.args`) plus any
given after `--`: this checkout's trainer stands in for the image or package. A trial gets the
environment Vertex gives it: CLOUD_ML_TRIAL_ID, its own CLOUD_ML_HP_METRIC_FILE, CLUSTER_SPEC
with `task.trial` (one replica, so no TF_CONFIG), and AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and
AIP_TENSORBOARD_LOG_DIR under its trial directory. Up to parallelTrialCount trials run at once;
the other replicas and worker pools of trialJobSpec only apply on Vertex.

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
import ctypes
import datetime
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TextIO

import optuna
from google.cloud.aiplatform_v1.types import StudySpec

from hptuning import measurements, results, search, stopping
from hptuning.flags import flag_text, trainer_max_steps
from hptuning.spec import TuningSpec
from trainer.errors import TrainerError

TRAINER = (sys.executable, "-m", "trainer.task")
STUDY_NAME = "vertex-trainer"
_POLL_SECS = 0.2
_GRACE_SECS = 30  # for a stopped trial to checkpoint (the trainer saves at its next log step)
_PR_SET_PDEATHSIG = 1
_ALGORITHM_NAMES = {"bayesian": "Bayesian (Optuna TPE)", "grid": "grid search",
                    "random": "random search"}
_NOT_LOCAL = {"convex_automated_stopping_spec": "convexAutomatedStoppingSpec",
              "study_stopping_config": "studyStoppingConfig"}


@dataclass
class _Running:
    number: int
    params: dict
    process: subprocess.Popen
    started: float
    stop_reason: str | None = None  # stopped early (SIGTERM sent) for this reason
    stop_deadline: float = 0.0  # killed if still running then

    @property
    def trial_id(self) -> str:
        return str(self.number + 1)


def trial_environment(environ: Mapping[str, str], trial_id: str, trial_dir: Path) -> dict:
    """The environment Vertex gives a one-replica trial, on top of ours."""
    env = {k: v for k, v in environ.items() if k != "TF_CONFIG"}
    env.update({
        "CLOUD_ML_TRIAL_ID": trial_id,
        "CLOUD_ML_HP_METRIC_FILE": str(trial_dir / "metrics" / measurements.METRIC_FILE),
        "AIP_MODEL_DIR": str(trial_dir / "model"),
        "AIP_CHECKPOINT_DIR": str(trial_dir / "checkpoints"),
        "AIP_TENSORBOARD_LOG_DIR": str(trial_dir / "logs"),
        "CLUSTER_SPEC": json.dumps({
            "cluster": {"workerpool0": ["127.0.0.1:2222"]}, "environment": "cloud",
            "task": {"type": "workerpool0", "index": 0, "trial": trial_id}, "job": {}}),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def trial_command(spec: TuningSpec, params: dict, trainer=TRAINER) -> list[str]:
    return [*trainer, *spec.trainer_args,
            *(f"--{name}={flag_text(value)}" for name, value in params.items())]


def run_study(spec: TuningSpec, output_dir: str | Path, seed: int | None = None,
              trainer=TRAINER, out: TextIO = sys.stdout,
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


def _die_with_parent() -> None:
    # Runs in each trial process before exec. A tuner killed outright (SIGKILL, OOM) cannot stop
    # its trials; they must not run on unsupervised and race the resumed study for their
    # trial directories.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _StudyRun:
    def __init__(self, spec: TuningSpec, study: optuna.Study, output_dir: Path,
                 seed: int | None, trainer, out: TextIO, parallel_reason: str):
        self.spec, self.study, self.output_dir, self.trainer, self.out = (
            spec, study, output_dir, trainer, out)
        self.parallel_reason = parallel_reason
        self.running: list[_Running] = []
        trials = study.get_trials(deepcopy=False)
        self.to_restart = []
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
        self.stopping = stopping.rule_of(spec.job.study_spec, spec.maximize,
                                         trainer_max_steps(spec.trainer_args))
        self.curves: list[list[measurements.Measurement]] = []  # of the completed trials
        for t in launched:
            if t.state == optuna.trial.TrialState.COMPLETE:
                self._note_best(str(t.number + 1), t.value)
                if _stopped_key(str(t.number + 1)) not in study.user_attrs:
                    self.curves.append(self._measurements(str(t.number + 1)))
        self.limit = spec.max_trials
        if spec.algorithm == "grid":
            try:
                self.limit = min(self.limit, len(search.grid(spec.params)))
            except ValueError as err:
                raise TrainerError(f"{spec.source}: studySpec.parameters: {err}; the local "
                                   "tuner enumerates it, use fewer values") from None
        study.sampler = search.make_sampler(spec, seed, len(trials))

    def run(self) -> int:
        self._header()
        previous = signal.signal(signal.SIGTERM, _interrupt)
        stopped = False
        try:
            while True:
                while not self._failed_out() and len(self.running) < self.spec.parallel:
                    if self.to_restart:
                        self._launch(*self.to_restart.pop(0), restarted=True)
                    elif self.launched < self.limit:
                        trial = self.study.ask()
                        params = search.suggest(trial, self.spec)
                        trial.set_user_attr("params", params)
                        self.launched += 1
                        self._launch(trial.number, params)
                    else:
                        break
                if self._failed_out() and self.running:
                    self._stop_running("the study failed")  # as Vertex cancels them
                if not self.running:
                    break
                time.sleep(_POLL_SECS)
                for trial in [t for t in self.running if t.process.poll() is not None]:
                    self.running.remove(trial)
                    self._finish(trial)
                self._stop_early()
        except KeyboardInterrupt:
            stopped = True
            self._stop_running("the tuner was stopped; restarts on the next run")
        finally:
            signal.signal(signal.SIGTERM, previous)
        return self._conclude(stopped)

    def _measurements(self, trial_id: str) -> list[measurements.Measurement]:
        return measurements.read(self._trial_dir(trial_id) / "metrics", self.spec.metric)

    def _stop_early(self) -> None:
        """SIGTERM to the trials the stopping rule gives up on: the trainer checkpoints and
        exits, and the trial is scored by the measurements it made."""
        if self.stopping is None:
            return
        for trial in self.running:
            if trial.stop_reason is not None:
                if time.monotonic() > trial.stop_deadline:
                    trial.process.kill()
                continue
            reason = self.stopping.reason(self._measurements(trial.trial_id), self.curves)
            if reason:
                trial.process.terminate()
                trial.stop_reason, trial.stop_deadline = reason, time.monotonic() + _GRACE_SECS
                self._row(trial.trial_id, "stopping", details=reason)

    def _failed_out(self) -> bool:
        return 0 < self.spec.max_failed <= self.failed

    def _header(self) -> None:
        spec = self.spec
        goal = "maximize" if spec.maximize else "minimize"
        self._print(f"study {spec.source}: {_ALGORITHM_NAMES[spec.algorithm]}, {goal} "
                    f"{spec.metric} ({spec.selection} measurement), {self.limit} trials, "
                    f"{spec.parallel} at a time ({self.parallel_reason}), in {self.output_dir}")
        for field, name in _NOT_LOCAL.items():
            if field in spec.job.study_spec:
                self._print(f"note: studySpec.{name} applies on Vertex only")
        done = self.launched - len(self.to_restart)
        if self.launched:
            self._print(f"resuming: {done} trial(s) finished ({self.failed} failed), "
                        f"{len(self.to_restart)} to restart")
        self._print(f"{'trial':>5}  {'event':<9}  {spec.metric:>10}  {'step':>6}  "
                    f"{'secs':>6}  details")

    def _row(self, trial_id: str, event: str, value="", step="", secs="", details="") -> None:
        value = f"{value:.6g}" if isinstance(value, float) else value
        secs = f"{secs:.1f}" if isinstance(secs, float) else secs
        self._print(f"{trial_id:>5}  {event:<9}  {value:>10}  {step!s:>6}  {secs:>6}  {details}")

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _trial_dir(self, trial_id: str) -> Path:
        return self.output_dir / "trials" / trial_id

    def _launch(self, number: int, params: dict, restarted: bool = False) -> None:
        trial_id = str(number + 1)
        trial_dir = self._trial_dir(trial_id)
        (trial_dir / "metrics").mkdir(parents=True, exist_ok=True)
        if restarted:
            measurements.keep_attempt(trial_dir / "metrics")
        command = trial_command(self.spec, params, self.trainer)
        with open(trial_dir / "trial.log", "a", encoding="utf-8") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"# {'restarted' if restarted else 'started'} {stamp}: "
                      f"{shlex.join(command)}\n")
            log.flush()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=trial_environment(os.environ, trial_id, trial_dir),
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.running.append(_Running(number, params, process, time.monotonic()))
        self._row(trial_id, "restarted" if restarted else "started",
                  details=" ".join(f"{k}={_show(v)}" for k, v in params.items()))

    def _finish(self, trial: _Running) -> None:
        secs = time.monotonic() - trial.started
        code = trial.process.returncode
        final = measurements.select(
            measurements.read(self._trial_dir(trial.trial_id) / "metrics", self.spec.metric),
            self.spec.maximize, self.spec.selection)
        if trial.stop_reason is not None and final is not None:
            self.study.set_user_attr(_stopped_key(trial.trial_id), trial.stop_reason)
            self.study.tell(trial.number, final.value)
            improved = self._note_best(trial.trial_id, final.value)
            self._row(trial.trial_id, "stopped early", final.value, final.step, secs,
                      "best so far" if improved else f"best: trial {self.best[0]}")
            return
        if code == 0 and final is not None:
            self.study.tell(trial.number, final.value)
            self.curves.append(self._measurements(trial.trial_id))
            improved = self._note_best(trial.trial_id, final.value)
            self._row(trial.trial_id, "succeeded", final.value, final.step, secs,
                      "best so far" if improved else f"best: trial {self.best[0]}")
            return
        reason = self._failure(trial.trial_id, code)
        self.study.set_user_attr(_failure_key(trial.trial_id), reason)
        self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        self.failed += 1
        self._row(trial.trial_id, "failed", secs=secs, details=reason)

    def _note_best(self, trial_id: str, value: float) -> bool:
        better = self.best is None or (value > self.best[1] if self.spec.maximize
                                       else value < self.best[1])
        if better:
            self.best = (trial_id, value)
        return better

    def _failure(self, trial_id: str, code: int) -> str:
        if code == 0:
            return (f"no {self.spec.metric} reported to "
                    f"{self._trial_dir(trial_id) / 'metrics' / measurements.METRIC_FILE}")
        lines = _tail(self._trial_dir(trial_id) / "trial.log")
        errors = [line for line in lines if line.startswith("error:")]
        last = (errors or lines or [""])[-1]
        return f"exit code {_exit_code(code)}: {last}" if last else f"exit code {_exit_code(code)}"

    def _stop_running(self, why: str) -> None:
        """SIGTERM makes a trainer checkpoint and exit; its trial stays running in the study
        and restarts from that checkpoint on the next run."""
        for trial in self.running:
            trial.process.terminate()
        deadline = time.monotonic() + _GRACE_SECS
        for trial in self.running:
            try:
                trial.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                trial.process.kill()
                trial.process.wait()
            self._row(trial.trial_id, "stopped", details=why)
        self.running.clear()

    def _conclude(self, stopped: bool) -> int:
        trials = self._results()
        paths = results.write(self.spec, trials, self.output_dir)
        winner = results.best(trials, self.spec.maximize)
        if winner:
            flags = " ".join(f"--{k}={flag_text(v)}" for k, v in winner.parameters.items())
            self._print(f"best trial {winner.trial_id}: {self.spec.metric} {winner.value:.6g} "
                        f"at step {winner.step}; {flags}")
            self._print(f"best model: {winner.model_dir or '(none exported)'}")
        self._print("results: " + ", ".join(str(p) for p in paths))
        if stopped:
            self._print("stopped; run the same command again to resume the study")
            return 130
        if self._failed_out():
            self._print(f"error: {self.failed} trials failed (maxFailedTrialCount "
                        f"{self.spec.max_failed}); see trials/<id>/trial.log")
            return 1
        if winner is None:
            self._print("error: no trial succeeded; see trials/<id>/trial.log")
            return 1
        return 0

    def _results(self) -> list[results.TrialResult]:
        states = {optuna.trial.TrialState.COMPLETE: results.SUCCEEDED,
                  optuna.trial.TrialState.FAIL: results.FAILED,
                  optuna.trial.TrialState.RUNNING: results.ACTIVE}
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if "params" not in t.user_attrs:
                continue
            trial_id = str(t.number + 1)
            trial_dir = self._trial_dir(trial_id)
            final = measurements.select(
                measurements.read(trial_dir / "metrics", self.spec.metric),
                self.spec.maximize, self.spec.selection)
            state = states[t.state]
            stopped_early = self.study.user_attrs.get(_stopped_key(trial_id))
            if stopped_early:
                state = results.STOPPED_EARLY
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if (
                t.datetime_complete and t.datetime_start) else None
            model_dir = trial_dir / "model"
            rows.append(results.TrialResult(
                trial_id=trial_id, state=state, parameters=t.user_attrs["params"],
                value=t.value if state in results.SCORED else None,
                step=final.step if final and state in results.SCORED else None,
                seconds=seconds, model_dir=str(model_dir) if model_dir.exists() else "",
                reason=stopped_early or self.study.user_attrs.get(_failure_key(trial_id), "")))
        return rows


def _failure_key(trial_id: str) -> str:
    # Study attributes, because a trial's own cannot change once it is told.
    return f"trial {trial_id} failure"


def _stopped_key(trial_id: str) -> str:
    return f"trial {trial_id} stopped early"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tail(path: Path, size: int = 16_384) -> list[str]:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        text = f.read().decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode  # killed by signal N -> 128 + N
