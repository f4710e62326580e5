"""The CI study: hptuning/ci_smoke.yaml with the real trainer on tiny data, killed and resumed.

3 trials of the DNN (`--max-trials 3`; the config says 4), 2 at a time, 40 steps each. The tuner
is killed (SIGKILL) once a trial has finished and the next has started, then run again with the
same command: it must finish the study without rerunning finished trials, with every score read
from the trial's hypertune file.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hptuning import measurements
from tests.conftest import REPO

TIMEOUT = 240


def tuner_command(dataset, output_dir):
    train_files, eval_files = dataset
    return [sys.executable, "-m", "hptuning", "hptuning/ci_smoke.yaml", "--output-dir",
            str(output_dir), "--seed", "3", "--max-trials", "3", "--parallel-trials", "2",
            "--", "--train-files", train_files, "--eval-files", eval_files]


def events(lines, event):
    return [m.group(1) for line in lines if (m := re.match(rf"\s*(\d+)  {event} ", line))]


@pytest.fixture(scope="module")
def study(dataset, tmp_path_factory):
    """(output dir, output of the killed run, output of the resumed run, its exit code)."""
    output_dir = tmp_path_factory.mktemp("study")
    tuner = subprocess.Popen(tuner_command(dataset, output_dir), cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    watchdog = threading.Timer(TIMEOUT, tuner.kill)
    watchdog.start()
    first = []
    try:
        for line in tuner.stdout:
            first.append(line)
            # Kill once a trial has succeeded and another started after it.
            if events(first, "succeeded") and events([line], "started"):
                break
        tuner.kill()
        tuner.wait()
        # Trials die with their tuner through Linux's parent-death signal.
        orphans_gone = _group_gone(tuner.pid) if sys.platform.startswith("linux") else True
    finally:
        watchdog.cancel()
        with_group_killed(tuner.pid)
    second = subprocess.run(tuner_command(dataset, output_dir), cwd=REPO, text=True,
                            capture_output=True, timeout=TIMEOUT)
    return output_dir, first, second.stdout.splitlines(True), second.returncode, orphans_gone


def _group_gone(pgid, wait=10.0):
    """Whether every trial died with the tuner (they are in its process group). Zombies count
    as gone: whether they are reaped soon is up to this machine's init."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not any(_live_member(stat, pgid) for stat in Path("/proc").glob("[0-9]*/stat")):
            return True
        time.sleep(0.1)
    return False


def _live_member(stat: Path, pgid: int) -> bool:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
    except OSError:  # exited meanwhile
        return False
    return int(fields[2]) == pgid and fields[0] != "Z"


def with_group_killed(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_killed_study_resumes_to_max_trial_count(study):
    output_dir, first, second, code, orphans_gone = study
    assert code == 0, "".join(second)
    assert orphans_gone, "trials outlived the killed tuner"
    finished_before = set(events(first, "succeeded"))
    running_at_kill = set(events(first, "started")) - finished_before
    assert finished_before and running_at_kill
    assert "resuming:" in "".join(second)
    assert ", 3 trials, 2 at a time (--parallel-trials 2), in " in first[0]
    # Finished trials are not repeated; the ones the kill interrupted restart under their ids.
    assert not finished_before & set(events(second, "started") + events(second, "restarted"))
    assert set(events(second, "restarted")) == running_at_kill
    summary = json.loads((output_dir / "results.json").read_text())
    assert [t["trial_id"] for t in summary["trials"]] == ["1", "2", "3"]
    assert all(t["state"] == "SUCCEEDED" for t in summary["trials"])
    for trial_id in running_at_kill:
        log = (output_dir / "trials" / trial_id / "trial.log").read_text()
        assert log.count("# started ") == 1 and log.count("# restarted ") == 1


def hypertune_reports(output_dir: Path, trial_id: str) -> list[dict]:
    path = output_dir / "trials" / trial_id / "metrics" / measurements.METRIC_FILE
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_score_comes_from_the_trials_hypertune_file(study):
    output_dir = study[0]
    summary = json.loads((output_dir / "results.json").read_text())
    for trial in summary["trials"]:
        reports = hypertune_reports(output_dir, trial["trial_id"])
        assert {r["trial"] for r in reports} == {trial["trial_id"]}
        # LAST_MEASUREMENT: the report at --max-steps.
        assert reports[-1]["global_step"] == "40" and trial["step"] == 40
        assert trial["value"] == float(reports[-1]["loss"])


def test_the_best_trial_is_the_lowest_loss(study):
    output_dir, _, second = study[:3]
    summary = json.loads((output_dir / "results.json").read_text())
    losses = {t["trial_id"]: t["value"] for t in summary["trials"]}
    best = min(losses, key=losses.get)
    assert summary["bestTrial"] == best
    assert any(line.startswith(f"best trial {best}: loss ") for line in second)
    model_dir = output_dir / "trials" / best / "model"
    assert f"best model: {model_dir}\n" in second
    assert (model_dir / "saved_model.pb").exists()
    rows = (output_dir / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial_id,state,loss,step,seconds,learning_rate,batch_size")
    assert len(rows) == 4
    assert (output_dir / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (output_dir / "study.db").exists()


def test_trials_have_vertex_output_dirs(study):
    output_dir = study[0]
    for trial_id in "123":
        trial_dir = output_dir / "trials" / trial_id
        assert (trial_dir / "checkpoints" / "checkpoint").exists()
        assert (trial_dir / "logs" / "train").is_dir() and (trial_dir / "logs" / "eval").is_dir()
        assert (trial_dir / "model" / "saved_model.pb").exists()
        command = (trial_dir / "trial.log").read_text().splitlines()[0]
        assert "--learning_rate=" in command and "--batch_size=" in command
