"""The local tuner's scheduling, failure accounting and resumption, with a stand-in trainer.

The stand-in starts in milliseconds and reports `loss` = lr + 1, lr, lr + 0.5 at steps 10, 20,
30 (best: lr at 20; last: lr + 0.5 at 30); FAKE_* variables make chosen trials fail, report
nothing or hang, FAKE_EXPORT_SECONDS makes each linger after its last report (as the trainer
exports). The real trainer runs the study in test_hptuning_study.py.
"""

import fcntl
import io
import json
import os
import re
import signal
import sys
import threading
import time

import optuna
import pytest
import yaml

from hptuning import measurements, results, spec, stopping, trials, tuner
from hptuning.measurements import Measurement
from tests.conftest import REPO
from tests.test_hptuning_spec import SAMPLE
from trainer.errors import TrainerError

FAKE_TRAINER = r'''
import json, os, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
trial = os.environ["CLOUD_ML_TRIAL_ID"]
def event(kind):
    with open(os.environ["FAKE_EVENTS"], "a") as f:
        f.write(json.dumps({"trial": trial, "event": kind, "time": time.time(),
                            "env": {k: os.environ.get(k) for k in (
                                "AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR",
                                "CLOUD_ML_HP_METRIC_FILE", "CLUSTER_SPEC", "TF_CONFIG")},
                            "argv": sys.argv[1:]}) + "\n")
def chosen(name):
    return trial in os.environ.get(name, "").split(",") or os.environ.get(name) == "*"
event("start")
lr = float(args["learning_rate"])
reports = [(10, lr + 1), (20, lr), (30, lr + 0.5)]
os.makedirs(os.path.dirname(os.environ["CLOUD_ML_HP_METRIC_FILE"]), exist_ok=True)
def report(count):
    with open(os.environ["CLOUD_ML_HP_METRIC_FILE"], "w") as f:
        for step, value in reports[:count]:
            f.write(json.dumps({"timestamp": time.time(), "trial": trial, "loss": str(value),
                                "global_step": str(step), "checkpoint_path": ""}) + "\n")
if chosen("FAKE_HANG"):
    report(1)
    time.sleep(600)
if chosen("FAKE_BAD"):  # a loss far above the others, reported until SIGTERM (then "saved")
    import signal
    def checkpoint_and_exit(*_):
        event("sigterm")
        sys.exit(0)
    signal.signal(signal.SIGTERM, checkpoint_and_exit)
    reports = [(10 + i // 10, 50.0 - i / 100) for i in range(1, 200)]  # steps 10 to 29
    for count in range(1, 200):
        report(count)
        time.sleep(0.2)
    event("end")
    sys.exit(0)
time.sleep(float(os.environ.get("FAKE_SECONDS", "0")))
if chosen("FAKE_FAIL"):
    print("some output\nerror: boom", flush=True)
    sys.exit(1)
if not chosen("FAKE_SILENT"):
    report(3)
time.sleep(float(os.environ.get("FAKE_EXPORT_SECONDS", "0")))  # after the last report
event("end")
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    monkeypatch.setenv("FAKE_EVENTS", str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["elsewhere:1"]}}')
    return (sys.executable, str(script))


def make_spec(tmp_path, **changes):
    document = yaml.safe_load((REPO / "hptuning" / "ci_smoke.yaml").read_text())
    document["studySpec"]["algorithm"] = "RANDOM_SEARCH"
    document["studySpec"]["measurementSelectionType"] = changes.pop("selection",
                                                                    "LAST_MEASUREMENT")
    document["studySpec"]["metrics"][0]["goal"] = changes.pop("goal", "MINIMIZE")
    document["studySpec"].update(changes.pop("study", {}))
    document["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"] += changes.pop(
        "args", [])
    if "low" in changes:
        document["studySpec"]["parameters"][0]["doubleValueSpec"]["minValue"] = changes.pop("low")
    document.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return spec.load(path, {"BUCKET": "b", "PROJECT": "p"}, SAMPLE)


def run(tmp_path, tuning, fake, seed=1, out=None):
    out = out or io.StringIO()
    code = tuner.run_study(tuning, tmp_path / "out", seed=seed, trainer=fake, out=out)
    return code, out.getvalue()


def events(tmp_path):
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summary(tmp_path):
    return json.loads((tmp_path / "out" / "results.json").read_text())


def max_concurrency(tmp_path):
    changes = sorted((e["time"], 1 if e["event"] == "start" else -1) for e in events(tmp_path))
    level = peak = 0
    for _, change in changes:
        level += change
        peak = max(peak, level)
    return peak


def test_trial_environment_is_what_vertex_sets(tmp_path):
    env = trials.trial_environment({"PATH": "/bin", "TF_CONFIG": "{}"}, "7", tmp_path / "7")
    assert "TF_CONFIG" not in env and env["PATH"] == "/bin"
    assert env["CLOUD_ML_TRIAL_ID"] == "7"
    assert env["CLOUD_ML_HP_METRIC_FILE"] == str(tmp_path / "7" / "metrics" / "output.metrics")
    assert (env["AIP_MODEL_DIR"], env["AIP_CHECKPOINT_DIR"], env["AIP_TENSORBOARD_LOG_DIR"]) == (
        str(tmp_path / "7" / "model"), str(tmp_path / "7" / "checkpoints"),
        str(tmp_path / "7" / "logs"))
    from trainer.cluster import resolve_cluster
    cluster = resolve_cluster({"CLUSTER_SPEC": env["CLUSTER_SPEC"]})
    assert (cluster.task_type, cluster.trial, cluster.is_distributed) == ("chief", "7", False)


def test_a_study_runs_its_trials_in_parallel_and_scores_them(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_SECONDS", "0.6")
    tuning = make_spec(tmp_path, maxTrialCount=5, parallelTrialCount=2,
                       selection="BEST_MEASUREMENT")
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    assert max_concurrency(tmp_path) == 2
    starts = [e for e in events(tmp_path) if e["event"] == "start"]
    assert sorted(e["trial"] for e in starts) == ["1", "2", "3", "4", "5"]
    for e in starts:
        trial_dir = tmp_path / "out" / "trials" / e["trial"]
        assert e["env"]["AIP_MODEL_DIR"] == str(trial_dir / "model")
        assert e["env"]["CLOUD_ML_HP_METRIC_FILE"] == str(trial_dir / "metrics" /
                                                          "output.metrics")
        assert json.loads(e["env"]["CLUSTER_SPEC"])["task"]["trial"] == e["trial"]
        assert e["env"]["TF_CONFIG"] is None
        assert e["argv"][:2] == ["--model=dnn", "--hypertune-metric=loss"]
        assert e["argv"][-2].startswith("--learning_rate=")
        assert e["argv"][-1] in ("--batch_size=25", "--batch_size=50", "--batch_size=100")
        assert (trial_dir / "trial.log").read_text().startswith("# started ")
    trials = summary(tmp_path)["trials"]
    for t in trials:  # BEST_MEASUREMENT, MINIMIZE: the report of lr itself, at step 20
        assert t["state"] == "SUCCEEDED" and (t["value"], t["step"]) == (
            t["parameters"]["learning_rate"], 20)
    best = min(trials, key=lambda t: t["value"])
    assert summary(tmp_path)["bestTrial"] == best["trial_id"]
    assert f"best trial {best['trial_id']}: loss" in output
    assert output.count(" started ") == 5 and output.count(" succeeded ") == 5
    # Each report is a row as the tuner reads it: steps 10, 20, 30 of each trial, in order.
    for t in trials:
        rows = re.findall(rf"^\s*{t['trial_id']}\s+measured\s+\S+\s+(\d+)\s", output, re.M)
        assert rows == ["10", "20", "30"], output
    assert (tmp_path / "out" / "plot.png").exists() and (tmp_path / "out" /
                                                          "results.csv").exists()


@pytest.mark.parametrize("selection, goal, offset, step", [
    ("LAST_MEASUREMENT", "MINIMIZE", 0.5, 30), ("LAST_MEASUREMENT", "MAXIMIZE", 0.5, 30),
    ("BEST_MEASUREMENT", "MINIMIZE", 0.0, 20), ("BEST_MEASUREMENT", "MAXIMIZE", 1.0, 10)])
def test_each_trial_is_scored_per_selection_and_goal(tmp_path, fake, selection, goal, offset,
                                                     step):
    tuning = make_spec(tmp_path, maxTrialCount=3, parallelTrialCount=3, selection=selection,
                       goal=goal)
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    trials = summary(tmp_path)["trials"]
    for t in trials:
        assert t["value"] == pytest.approx(t["parameters"]["learning_rate"] + offset)
        assert t["step"] == step
    pick = max if goal == "MAXIMIZE" else min
    assert summary(tmp_path)["bestTrial"] == pick(trials, key=lambda t: t["value"])["trial_id"]


def test_the_study_stops_when_max_failed_trials_fail(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1,2")
    tuning = make_spec(tmp_path, maxTrialCount=4, parallelTrialCount=1, maxFailedTrialCount=2)
    code, output = run(tmp_path, tuning, fake)
    assert code == 1
    assert "error: 2 trials failed (maxFailedTrialCount 2)" in output
    trials = summary(tmp_path)["trials"]
    assert [(t["trial_id"], t["state"]) for t in trials] == [("1", "FAILED"), ("2", "FAILED")]
    assert trials[0]["reason"] == "exit code 1: error: boom"


def test_failures_below_the_limit_do_not_stop_the_study(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_SILENT", "1")
    monkeypatch.setenv("FAKE_FAIL", "2")
    tuning = make_spec(tmp_path, maxTrialCount=3, parallelTrialCount=1, maxFailedTrialCount=3)
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    states = {t["trial_id"]: (t["state"], t["reason"]) for t in summary(tmp_path)["trials"]}
    assert states["1"] == ("FAILED", "no loss reported to "
                           f"{tmp_path / 'out' / 'trials' / '1' / 'metrics' / 'output.metrics'}")
    assert states["2"] == ("FAILED", "exit code 1: error: boom")
    assert states["3"] == ("SUCCEEDED", "")


def test_zero_max_failed_runs_every_trial_and_fails_if_none_succeeds(tmp_path, fake,
                                                                      monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "*")
    tuning = make_spec(tmp_path, maxTrialCount=3, parallelTrialCount=3, maxFailedTrialCount=0)
    code, output = run(tmp_path, tuning, fake)
    assert code == 1 and "error: no trial succeeded" in output
    assert len(summary(tmp_path)["trials"]) == 3


def test_a_stopped_study_resumes_without_rerunning_finished_trials(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_HANG", "2")
    tuning = make_spec(tmp_path, maxTrialCount=3, parallelTrialCount=2)

    out = io.StringIO()

    def stop_when_trial_2_hangs():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # Trials 1 and 3 ended and the tuner recorded both: only trial 2 is left running.
            seen = out.getvalue()
            if "    1  succeeded" in seen and "    3  succeeded" in seen:
                os.kill(os.getpid(), signal.SIGTERM)  # the tuner's own handler takes it
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_when_trial_2_hangs)
    watcher.start()
    code, output = run(tmp_path, tuning, fake, out=out)
    watcher.join()
    assert code == 130, output
    assert "    2  stopped" in output and "run the same command again to resume" in output
    states = {t["trial_id"]: t["state"] for t in summary(tmp_path)["trials"]}
    assert states == {"1": "SUCCEEDED", "2": "ACTIVE", "3": "SUCCEEDED"}
    before = summary(tmp_path)["trials"]

    monkeypatch.delenv("FAKE_HANG")
    code, output = run(tmp_path, tuning, fake, seed=2)
    assert code == 0, output
    assert "resuming: 2 trial(s) finished (0 failed), 1 to restart" in output
    assert "    2  restarted" in output and " started " not in output
    after = summary(tmp_path)["trials"]
    assert [t["state"] for t in after] == ["SUCCEEDED"] * 3
    assert [after[0], after[2]] == [before[0], before[2]]  # finished trials are left alone
    assert after[1]["parameters"] == before[1]["parameters"]
    trial_2 = tmp_path / "out" / "trials" / "2"
    log = (trial_2 / "trial.log").read_text()
    assert log.count("# started ") == 1 and log.count("# restarted ") == 1
    assert (trial_2 / "metrics" / "attempt-0.metrics").exists()  # the first attempt's reports
    starts = [e["trial"] for e in events(tmp_path) if e["event"] == "start"]
    assert sorted(starts) == ["1", "2", "2", "3"]


def test_a_trial_asked_but_never_launched_does_not_count(tmp_path, fake):
    tuning = make_spec(tmp_path, maxTrialCount=2)
    (tmp_path / "out").mkdir()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}",
                                study_name=tuner.STUDY_NAME, direction="minimize")
    study.ask()  # as if the tuner was killed between asking and launching
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    assert [t["trial_id"] for t in summary(tmp_path)["trials"]] == ["2", "3"]


def test_max_trial_count_may_grow_but_the_space_may_not_change(tmp_path, fake):
    assert run(tmp_path, make_spec(tmp_path, maxTrialCount=2), fake)[0] == 0
    code, output = run(tmp_path, make_spec(tmp_path, maxTrialCount=3), fake)
    assert code == 0 and output.count(" started ") == 1 and "    3  started" in output
    with pytest.raises(TrainerError, match="holds a study of .*config.yaml with another "
                                           "search space, metric or trainer args; use a new "
                                           "--output-dir"):
        run(tmp_path, make_spec(tmp_path, maxTrialCount=3, low=0.002), fake)


def test_one_tuner_per_output_dir(tmp_path, fake):
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(TrainerError, match="another tuner is running this study"):
            run(tmp_path, make_spec(tmp_path), fake)


def test_grid_search_stops_when_the_grid_is_done(tmp_path, fake):
    document = yaml.safe_load((REPO / "hptuning" / "ci_smoke.yaml").read_text())
    document["studySpec"]["algorithm"] = "GRID_SEARCH"
    document["studySpec"]["parameters"] = [
        {"parameterId": "learning_rate", "discreteValueSpec": {"values": [0.01, 0.1]}},
        {"parameterId": "batch_size", "discreteValueSpec": {"values": [25, 50]}}]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(document))
    tuning = spec.load(path, {"BUCKET": "b", "PROJECT": "p"}, SAMPLE)
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    points = {(t["parameters"]["learning_rate"], t["parameters"]["batch_size"])
              for t in summary(tmp_path)["trials"]}
    assert points == {(0.01, 25), (0.01, 50), (0.1, 25), (0.1, 50)}


def test_results_of_a_study_are_rows_per_launched_trial(tmp_path, fake):
    run(tmp_path, make_spec(tmp_path, maxTrialCount=2), fake)
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert rows[0] == "trial_id,state,loss,step,seconds,learning_rate,batch_size,model_dir,reason"
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", results.SUCCEEDED],
                                                   ["2", results.SUCCEEDED]]


@pytest.mark.parametrize("stopping_spec", ["medianAutomatedStoppingSpec",
                                           "decayCurveStoppingSpec"])
def test_a_clearly_bad_trial_is_stopped_early_with_its_last_measurement(
        tmp_path, fake, monkeypatch, stopping_spec):
    monkeypatch.setenv("FAKE_BAD", "3")
    # The others report at --max-steps, so they are never stopped while they exit.
    tuning = make_spec(tmp_path, maxTrialCount=3, parallelTrialCount=1, args=["--max-steps=30"],
                       study={stopping_spec: {"useElapsedDuration": False}})
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    assert [e["event"] for e in events(tmp_path) if e["trial"] == "3"] == ["start", "sigterm"]
    trials = {t["trial_id"]: t for t in summary(tmp_path)["trials"]}
    assert [trials[i]["state"] for i in "123"] == ["SUCCEEDED", "SUCCEEDED", "STOPPED_EARLY"]
    last = measurements.read(tmp_path / "out" / "trials" / "3" / "metrics", "loss")[-1]
    assert (trials["3"]["value"], trials["3"]["step"]) == (last.value, last.step)
    assert trials["3"]["reason"].startswith(
        "median rule: " if stopping_spec.startswith("median") else "decay curve: ")
    assert " stopped early " in output
    assert "\n3,STOPPED_EARLY," in (tmp_path / "out" / "results.csv").read_text()


@pytest.mark.parametrize("stopping_spec", ["medianAutomatedStoppingSpec",
                                           "decayCurveStoppingSpec"])
def test_a_trial_that_trained_to_max_steps_is_never_stopped(tmp_path, fake, monkeypatch,
                                                            stopping_spec):
    # Every trial's curve ends rising (lr, then lr + 0.5), and at --max-steps: the decay rule
    # would stop any trial worse than the best so far while it exports, had it steps to go.
    monkeypatch.setenv("FAKE_EXPORT_SECONDS", "1")
    tuning = make_spec(tmp_path, maxTrialCount=4, parallelTrialCount=1, args=["--max-steps=30"],
                       study={stopping_spec: {}})
    code, output = run(tmp_path, tuning, fake)
    assert code == 0, output
    assert " stopping " not in output
    assert [t["state"] for t in summary(tmp_path)["trials"]] == ["SUCCEEDED"] * 4


def test_stopping_rules():
    rule = stopping.StoppingRule("decay curve", maximize=False, max_steps=100)
    done = [[Measurement(50, 1.0), Measurement(100, 0.5)]]
    rising = [Measurement(10, 0.8), Measurement(20, 0.9)]
    assert rule.reason(rising, done).startswith("decay curve: extended to step 100 it reaches ")
    assert rule.reason(rising[:1], done) is None  # a line needs two points
    falling = [Measurement(10, 0.8), Measurement(20, 0.7)]
    assert rule.reason(falling, done) is None  # 0.7 - 0.01 * 80 is below 0.5
    finished = [Measurement(90, 0.8), Measurement(100, 0.9)]
    assert rule.reason(finished, done) is None  # nothing left to save
    median = stopping.StoppingRule("median", maximize=True, max_steps=100)
    completed = [[Measurement(10, 0.5)], [Measurement(10, 0.7)], [Measurement(10, 0.9)]]
    assert median.reason([Measurement(10, 0.6)], completed).startswith(
        "median rule: best 0.6 by step 10 is worse than the median 0.7 of 3 completed trials")
    assert median.reason([Measurement(10, 0.7)], completed) is None
    assert median.reason([Measurement(10, 0.1)], completed[:1]) is None  # fewer than 2 done


def test_with_epochs_each_trial_ends_at_its_own_step_so_only_the_median_rule_applies():
    from hptuning.flags import trainer_max_steps

    assert trainer_max_steps(["--max-steps=30"]) == 30 and trainer_max_steps([]) == 1000
    assert trainer_max_steps(["--epochs=3"]) is None
    assert trainer_max_steps([], tuned=["batch_size", "epochs"]) is None
    median = stopping.rule_of({"median_automated_stopping_spec": {}}, True, None)
    completed = [[Measurement(10, 0.5)], [Measurement(10, 0.7)], [Measurement(10, 0.9)]]
    assert median.reason([Measurement(10, 0.6)], completed).startswith("median rule: ")
    with pytest.raises(TrainerError, match="decayCurveStoppingSpec: .* --epochs leaves to each "
                                           "trial's batch size; give --max-steps"):
        stopping.rule_of({"decay_curve_stopping_spec": {}}, True, None)


def test_a_stopping_spec_with_a_wrong_field_is_refused_naming_it(tmp_path):
    with pytest.raises(TrainerError, match="medianAutomatedStoppingSpec.*useElapsed"):
        make_spec(tmp_path, study={"medianAutomatedStoppingSpec": {"useElapsed": True}})
