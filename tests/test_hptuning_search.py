"""Search spaces (scale types, conditional parameters, grids), measurements and results."""

import json
import math

import optuna
import pytest
import yaml

from hptuning import measurements, results, search, spec
from hptuning.flags import flag_text
from hptuning.measurements import Measurement
from tests.conftest import REPO
from tests.test_hptuning_spec import SAMPLE

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tuning_spec(tmp_path, parameters, algorithm="RANDOM_SEARCH", **study):
    document = yaml.safe_load((REPO / "hptuning" / "ci_smoke.yaml").read_text())
    document["studySpec"].update(parameters=parameters, algorithm=algorithm, **study)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return spec.load(path, {"BUCKET": "b", "PROJECT": "p"}, SAMPLE)


def samples(tuning, count, seed=0, tell=None):
    study = optuna.create_study(sampler=search.make_sampler(tuning, seed, 0))
    drawn = []
    for _ in range(count):
        trial = study.ask()
        drawn.append(search.suggest(trial, tuning))
        study.tell(trial, tell(drawn[-1]) if tell else 0.0)
    return drawn


def double(name, low, high, scale):
    return {"parameterId": name, "doubleValueSpec": {"minValue": low, "maxValue": high},
            "scaleType": scale}


@pytest.mark.parametrize("scale, below_1e_2", [("UNIT_LINEAR_SCALE", (0.0, 0.03)),
                                               ("UNIT_LOG_SCALE", (0.4, 0.6)),
                                               ("UNIT_REVERSE_LOG_SCALE", (0.0, 0.03))])
def test_double_scale_types(tmp_path, scale, below_1e_2):
    tuning = tuning_spec(tmp_path, [double("learning_rate", 1e-4, 1.0, scale)])
    values = [s["learning_rate"] for s in samples(tuning, 400)]
    assert all(1e-4 <= v <= 1.0 for v in values)
    share = sum(v < 1e-2 for v in values) / len(values)
    assert below_1e_2[0] <= share <= below_1e_2[1]
    if scale == "UNIT_REVERSE_LOG_SCALE":  # dense near the maximum, as log is near the minimum
        assert 0.4 <= sum(v > 1 - 1e-2 for v in values) / len(values) <= 0.6


@pytest.mark.parametrize("scale", ["UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE",
                                   "UNIT_REVERSE_LOG_SCALE"])
def test_integer_scale_types(tmp_path, scale):
    tuning = tuning_spec(tmp_path, [{"parameterId": "max_steps", "scaleType": scale,
                                     "integerValueSpec": {"minValue": 1, "maxValue": 1000}}])
    values = [s["max_steps"] for s in samples(tuning, 300)]
    assert all(type(v) is int and 1 <= v <= 1000 for v in values)
    small = sum(v <= 31 for v in values) / len(values)  # 31 ~ sqrt(1000)
    assert {"UNIT_LINEAR_SCALE": small < 0.1, "UNIT_LOG_SCALE": 0.35 < small < 0.65,
            "UNIT_REVERSE_LOG_SCALE": small < 0.1}[scale]
    if scale == "UNIT_REVERSE_LOG_SCALE":
        assert 0.35 < sum(v >= 970 for v in values) / len(values) < 0.65


def test_discrete_values_are_sampled_as_listed_and_as_ints_for_int_flags(tmp_path):
    tuning = tuning_spec(tmp_path, [
        {"parameterId": "batch_size", "discreteValueSpec": {"values": [16, 32, 64]}},
        {"parameterId": "dropout", "discreteValueSpec": {"values": [0.0, 0.25, 0.5]}}])
    drawn = samples(tuning, 60)
    assert {s["batch_size"] for s in drawn} == {16, 32, 64}
    assert all(type(s["batch_size"]) is int for s in drawn)
    assert {s["dropout"] for s in drawn} == {0.0, 0.25, 0.5}


def test_conditional_parameters_appear_only_under_their_parent_values():
    tuning = spec.load(REPO / "hptuning" / "models.yaml", {"BUCKET": "b", "PROJECT": "p"},
                       SAMPLE)
    # TPE (the Bayesian algorithm) past its random start-up trials, so its conditional model is
    # exercised too; the "metric" favours cnn with a small learning rate.
    drawn = samples(tuning, 24, tell=lambda s: (s["model"] == "cnn") + s["learning_rate"])
    assert {s["model"] for s in drawn} >= {"dnn", "cnn"}
    for s in drawn:
        assert ("dropout" in s) == (s["model"] in ("cnn", "cnn_bn"))
        low, high = (0.005, 0.5) if s["model"] == "dnn" else (0.00003, 0.003)
        assert low <= s["learning_rate"] <= high
        assert s["batch_size"] in (50, 100, 200)
        assert list(s) == ["model", "learning_rate", *(["dropout"] if "dropout" in s else []),
                           "batch_size"]


def grid_params():
    return [{"parameterId": "model", "categoricalValueSpec": {"values": ["dnn", "cnn"]},
             "conditionalParameterSpecs": [{
                 "parentCategoricalValues": {"values": ["cnn"]},
                 "parameterSpec": {"parameterId": "dropout",
                                   "discreteValueSpec": {"values": [0.2, 0.4]}}}]},
            {"parameterId": "batch_size", "integerValueSpec": {"minValue": 50, "maxValue": 51}}]


def test_grid_enumerates_conditional_combinations_once(tmp_path):
    tuning = tuning_spec(tmp_path, grid_params(), algorithm="GRID_SEARCH")
    expected = [{"model": "dnn", "batch_size": 50}, {"model": "dnn", "batch_size": 51},
                {"model": "cnn", "dropout": 0.2, "batch_size": 50},
                {"model": "cnn", "dropout": 0.2, "batch_size": 51},
                {"model": "cnn", "dropout": 0.4, "batch_size": 50},
                {"model": "cnn", "dropout": 0.4, "batch_size": 51}]
    assert search.grid(tuning.params) == expected
    assert search.grid_size(tuning.params) == 6
    drawn = samples(tuning, 6)
    assert sorted(map(json.dumps, drawn)) == sorted(map(json.dumps, expected))


def test_grid_too_large(tmp_path):
    tuning = tuning_spec(tmp_path, [
        {"parameterId": name, "integerValueSpec": {"minValue": 1, "maxValue": 1000}}
        for name in ("max_steps", "eval_every_steps")], algorithm="GRID_SEARCH")
    with pytest.raises(ValueError, match="the grid has 1,000,000 points"):
        search.grid(tuning.params)


def test_seeded_samplers_repeat_and_offsets_differ(tmp_path):
    tuning = tuning_spec(tmp_path, [double("learning_rate", 1e-4, 1.0, "UNIT_LOG_SCALE")])
    assert samples(tuning, 3, seed=5) == samples(tuning, 3, seed=5)
    study = optuna.create_study(sampler=search.make_sampler(tuning, 5, 3))
    assert search.suggest(study.ask(), tuning) != samples(tuning, 1, seed=5)[0]


@pytest.mark.parametrize("value, text", [(64, "64"), (64.0, "64"), (0.001, "0.001"),
                                         (1e-05, "1e-05"), ("cnn", "cnn"), (0.5, "0.5")])
def test_flag_text(value, text):
    assert flag_text(value) == text


REPORTS = [Measurement(10, 0.5), Measurement(20, 0.9), Measurement(30, 0.2),
           Measurement(40, 0.7)]


@pytest.mark.parametrize("maximize, selection, expected", [
    (True, "best", Measurement(20, 0.9)), (False, "best", Measurement(30, 0.2)),
    (True, "last", Measurement(40, 0.7)), (False, "last", Measurement(40, 0.7))])
def test_measurement_selection(maximize, selection, expected):
    assert measurements.select(REPORTS, maximize, selection) == expected
    assert measurements.select([], maximize, selection) is None


def test_best_measurement_keeps_the_earliest_of_equals():
    equal = [Measurement(1, 0.5), Measurement(2, 0.5)]
    assert measurements.select(equal, True, "best").step == 1


def hypertune_line(trial, step, **metrics):
    return json.dumps({"timestamp": 1.0, "trial": trial, "global_step": str(step),
                       "checkpoint_path": "", **{k: str(v) for k, v in metrics.items()}})


def test_reading_hypertune_files_across_attempts(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    current = metrics_dir / measurements.METRIC_FILE
    current.write_text(hypertune_line("3", 10, loss=0.9) + "\n")
    measurements.keep_attempt(metrics_dir)
    assert not current.exists() and (metrics_dir / "attempt-0.metrics").exists()
    current.write_text("\n".join([
        hypertune_line("3", 20, loss=0.5), hypertune_line("3", 25, accuracy=0.8),
        hypertune_line("3", 30, loss=float("nan")), '{"loss": "0.1", "glob']) + "\n")
    measurements.keep_attempt(metrics_dir)
    current.write_text(hypertune_line("3", 40, loss=0.4) + "\n")
    assert [p.name for p in measurements.attempt_files(metrics_dir)] == [
        "attempt-0.metrics", "attempt-1.metrics", "output.metrics"]
    # Non-finite values, other metrics and a line cut short are not measurements.
    assert measurements.read(metrics_dir, "loss") == [
        Measurement(10, 0.9), Measurement(20, 0.5), Measurement(40, 0.4)]
    assert measurements.read(metrics_dir, "accuracy") == [Measurement(25, 0.8)]


def trial_result(trial_id, value, state=results.SUCCEEDED, **parameters):
    return results.TrialResult(trial_id, state, parameters or {"learning_rate": 0.1}, value,
                               step=10 if value is not None else None)


def test_best_trial_for_each_goal():
    trials = [trial_result("1", 0.5), trial_result("2", 0.2), trial_result("3", None,
                                                                           results.FAILED),
              trial_result("4", 0.9), trial_result("5", 0.2)]
    assert results.best(trials, maximize=True).trial_id == "4"
    assert results.best(trials, maximize=False).trial_id == "2"  # the earlier of equals
    assert results.best(trials[2:3], maximize=True) is None


def test_results_tables_and_plot(tmp_path):
    tuning = spec.load(REPO / "hptuning" / "models.yaml", {"BUCKET": "b", "PROJECT": "p"},
                       SAMPLE)
    trials = [
        trial_result("1", 0.9, model="cnn", learning_rate=0.001, dropout=0.3, batch_size=50),
        trial_result("2", 0.8, model="dnn", learning_rate=0.05, batch_size=100),
        trial_result("3", None, results.FAILED, model="dnn", learning_rate=0.4, batch_size=200),
    ]
    paths = results.write(tuning, trials, tmp_path)
    assert [p.name for p in paths] == ["results.csv", "results.json", "plot.png"]
    lines = paths[0].read_text().splitlines()
    assert lines[0] == ("trial_id,state,accuracy,step,seconds,model,learning_rate,dropout,"
                        "batch_size,model_dir,reason")
    assert lines[2] == "2,SUCCEEDED,0.8,10,,dnn,0.05,,100,,"
    summary = json.loads(paths[1].read_text())
    assert summary["bestTrial"] == "1" and summary["goal"] == "MAXIMIZE"
    assert [t["state"] for t in summary["trials"]] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isclose(summary["trials"][0]["parameters"]["dropout"], 0.3)
