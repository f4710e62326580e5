"""One trial as a process: its command line, the environment Vertex gives it, its directory and
log, and how it is stopped.

A trial is `python -m trainer.task <trainer args> --<parameterId>=<value> ...` with
CLOUD_ML_TRIAL_ID, its own CLOUD_ML_HP_METRIC_FILE, CLUSTER_SPEC with `task.trial` (one replica,
so no TF_CONFIG), and AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR under
`trials/<id>/`, whose `trial.log` holds each attempt's command line and output.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from hptuning import measurements
from hptuning.flags import flag_text
from hptuning.spec import TuningSpec

TRAINER = (sys.executable, "-m", "trainer.task")
GRACE_SECS = 30  # for a stopped trial to checkpoint (the trainer saves at its next log step)
_PR_SET_PDEATHSIG = 1


def trial_id(number: int) -> str:
    """The trial's id: its Optuna trial number + 1, as Vertex counts from 1."""
    return str(number + 1)


def trial_dir(output_dir: Path, trial: str) -> Path:
    return output_dir / "trials" / trial


def trial_environment(environ: Mapping[str, str], trial: str, directory: Path) -> dict:
    """The environment Vertex gives a one-replica trial, on top of ours."""
    env = {k: v for k, v in environ.items() if k != "TF_CONFIG"}
    env.update({
        "CLOUD_ML_TRIAL_ID": trial,
        "CLOUD_ML_HP_METRIC_FILE": str(directory / "metrics" / measurements.METRIC_FILE),
        "AIP_MODEL_DIR": str(directory / "model"),
        "AIP_CHECKPOINT_DIR": str(directory / "checkpoints"),
        "AIP_TENSORBOARD_LOG_DIR": str(directory / "logs"),
        "CLUSTER_SPEC": json.dumps({
            "cluster": {"workerpool0": ["127.0.0.1:2222"]}, "environment": "cloud",
            "task": {"type": "workerpool0", "index": 0, "trial": trial}, "job": {}}),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def trial_command(spec: TuningSpec, params: dict, trainer=TRAINER) -> list[str]:
    return [*trainer, *spec.trainer_args,
            *(f"--{name}={flag_text(value)}" for name, value in params.items())]


def _die_with_parent() -> None:
    # Runs in each trial process before exec. A tuner killed outright (SIGKILL, OOM) cannot stop
    # its trials; they must not run on unsupervised and race the resumed study for their
    # trial directories.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class TrialProcess:
    number: int
    params: dict
    directory: Path
    process: subprocess.Popen
    started: float
    stop_reason: str | None = None  # stopped early (SIGTERM sent) for this reason
    stop_deadline: float = 0.0  # killed if still running then

    @property
    def trial_id(self) -> str:
        return trial_id(self.number)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def stop_early(self, reason: str) -> None:
        """SIGTERM: the trainer checkpoints and exits; killed if still running after the grace
        period (see `enforce_deadline`)."""
        self.process.terminate()
        self.stop_reason, self.stop_deadline = reason, time.monotonic() + GRACE_SECS

    def enforce_deadline(self) -> None:
        if time.monotonic() > self.stop_deadline:
            self.process.kill()

    def failure(self, metric: str) -> str:
        """Why the finished trial failed: no metric reported, or its exit code and last error
        line."""
        code = self.process.returncode
        if code == 0:
            return (f"no {metric} reported to "
                    f"{self.directory / 'metrics' / measurements.METRIC_FILE}")
        lines = _tail(self.directory / "trial.log")
        errors = [line for line in lines if line.startswith("error:")]
        last = (errors or lines or [""])[-1]
        return f"exit code {_exit_code(code)}: {last}" if last else f"exit code {_exit_code(code)}"


def launch(number: int, params: dict, directory: Path, command: Sequence[str],
           restarted: bool = False) -> TrialProcess:
    """Starts the trial in its directory (a restarted one keeps its earlier metric file)."""
    (directory / "metrics").mkdir(parents=True, exist_ok=True)
    if restarted:
        measurements.keep_attempt(directory / "metrics")
    with open(directory / "trial.log", "a", encoding="utf-8") as log:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(f"# {'restarted' if restarted else 'started'} {stamp}: "
                  f"{shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=trial_environment(os.environ, trial_id(number), directory),
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    return TrialProcess(number, params, directory, process, time.monotonic())


def stop_all(running: Sequence[TrialProcess]) -> None:
    """SIGTERM makes each trainer checkpoint and exit; those still running after the grace
    period are killed."""
    for trial in running:
        trial.process.terminate()
    deadline = time.monotonic() + GRACE_SECS
    while time.monotonic() < deadline and any(t.process.poll() is None for t in running):
        time.sleep(0.1)
    for trial in running:
        if trial.process.poll() is None:
            trial.process.kill()
        trial.process.wait()


def _tail(path: Path, size: int = 16_384) -> list[str]:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        text = f.read().decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode  # killed by signal N -> 128 + N
