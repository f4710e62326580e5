"""Tuning configs: the shipped ones validate, and every kind of bad one is a one-line error."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hptuning.__main__ as tuner_cli
from hptuning import cli, spec
from tests.conftest import REPO
from trainer.errors import TrainerError

VALUES = {"BUCKET": "test-bucket", "PROJECT": "test-project"}
# The shipped studies carry no data; these tests tune on the bundled sample, explicitly.
SAMPLE = ("--bundled-sample",)


def smoke_config() -> dict:
    return yaml.safe_load((REPO / "hptuning" / "ci_smoke.yaml").read_text())


def as_legacy(document: dict) -> dict:
    """Makes the config run the legacy way (our sdist on a prebuilt image); returns that spec."""
    pool = document["trialJobSpec"]["workerPoolSpecs"][0]
    pool["pythonPackageSpec"] = {
        "executorImageUri": "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest",
        "packageUris": ["gs://${BUCKET}/vertex-trainer-0.1.0.tar.gz"],
        "pythonModule": "trainer.task", "args": pool.pop("containerSpec")["args"]}
    return pool["pythonPackageSpec"]


def write(tmp_path, document, name="config.yaml"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else
                    yaml.safe_dump(document, sort_keys=False))
    return path


def load(tmp_path, document, extra_args=SAMPLE, **kwargs):
    return spec.load(write(tmp_path, document), VALUES, extra_args, **kwargs)


@pytest.mark.parametrize("name", ["cnn", "models", "ci_smoke", "resnet"])
def test_shipped_configs_validate(name):
    data = () if name == "resnet" else SAMPLE  # resnet.yaml names its CIFAR-10 on gs://
    tuning = spec.load(REPO / "hptuning" / f"{name}.yaml", VALUES, data)
    assert tuning.trainer_args and tuning.params
    pool = tuning.job.trial_job_spec.worker_pool_specs[0]
    # Our training image, where cloudbuild.yaml pushes it; its entrypoint runs the trainer.
    assert "python_package_spec" not in pool and not pool.container_spec.command
    assert pool.container_spec.image_uri == (
        "us-docker.pkg.dev/test-project/vertex-trainer/trainer:latest")
    assert tuning.trainer_args == tuple(pool.container_spec.args)
    assert tuning.args_field == "trialJobSpec.workerPoolSpecs[0].containerSpec.args"


def test_epochs_can_be_tuned_with_the_batch_size_instead_of_max_steps(tmp_path):
    document = smoke_config()
    params(document).append({"parameterId": "epochs",
                             "discreteValueSpec": {"values": [1, 2, 4]}})
    with pytest.raises(TrainerError, match=r"parameters\[2\].*the trainer rejects --epochs=1: "
                                           "--max-steps and --epochs both set the same thing"):
        load(tmp_path, document)
    container(document)["args"].remove("--max-steps=40")
    tuning = load(tmp_path, document)
    assert [p.id for p in tuning.params] == ["learning_rate", "batch_size", "epochs"]


def test_a_legacy_python_package_config_still_validates(tmp_path):
    document = smoke_config()
    as_legacy(document)
    tuning = load(tmp_path, document)
    assert tuning.trainer_args == (*smoke_config()["trialJobSpec"]["workerPoolSpecs"][0][
        "containerSpec"]["args"], *SAMPLE)
    assert tuning.args_field == "trialJobSpec.workerPoolSpecs[0].pythonPackageSpec.args"
    package = tuning.job.trial_job_spec.worker_pool_specs[0].python_package_spec
    assert package.package_uris == ["gs://test-bucket/vertex-trainer-0.1.0.tar.gz"]


def test_a_container_command_that_runs_the_trainer_is_accepted(tmp_path):
    document = smoke_config()
    container(document)["command"] = ["python3", "-m", "trainer.task"]
    assert load(tmp_path, document).trainer_args[0] == "--model=dnn"


def test_the_shipped_configs_cover_the_issue():
    cnn = spec.load(REPO / "hptuning" / "cnn.yaml", VALUES, SAMPLE)
    kinds = {p.id: (p.kind, p.scale) for p in cnn.params}
    assert cnn.algorithm == "bayesian"
    assert kinds["learning_rate"] == ("double", "log")
    assert kinds["batch_size"][0] == "discrete" and kinds["dropout"][0] == "double"
    models = spec.load(REPO / "hptuning" / "models.yaml", VALUES, SAMPLE)
    model = next(p for p in models.params if p.id == "model")
    assert model.kind == "categorical"
    assert {c.param.id for c in model.children} == {"learning_rate", "dropout"}


def test_values_and_keys_of_the_models_space():
    models = spec.load(REPO / "hptuning" / "models.yaml", VALUES, SAMPLE)
    model, batch = models.params
    assert batch.values == (50, 100, 200) and all(type(v) is int for v in batch.values)
    keys = [c.param.key for c in model.children]
    # learning_rate repeats under disjoint parent values, so its two specs get distinct keys.
    assert keys == ["learning_rate|model=dnn", "learning_rate|model=cnn_small,cnn,cnn_bn",
                    "dropout"]
    assert models.maximize and models.selection == "best" and models.metric == "accuracy"


def test_selection_defaults_to_last_and_both_flag_spellings_work(tmp_path):
    document = smoke_config()
    del document["studySpec"]["measurementSelectionType"]
    document["studySpec"]["parameters"][0]["parameterId"] = "learning-rate"
    tuning = load(tmp_path, document)
    assert tuning.selection == "last" and tuning.params[0].id == "learning-rate"


def test_extra_args_follow_the_config_args(tmp_path):
    tuning = load(tmp_path, smoke_config(), extra_args=["--bundled-sample", "--max-steps=5"])
    assert tuning.trainer_args[-2:] == ("--bundled-sample", "--max-steps=5")
    assert tuning.trainer_args[0] == "--model=dnn"
    # The job carries them too: tune-submit sends what the local trials run.
    assert tuple(container_args(tuning)) == tuning.trainer_args


@pytest.mark.parametrize("extra", [["--learning-rate=0.1"], ["--batch_size", "10"]])
def test_a_tuned_flag_in_the_extra_args_is_an_error_not_silently_replaced(tmp_path, extra):
    with pytest.raises(spec.TrainerError, match=r": the args after --: set --\S+, which the "
                                                r"study tunes \(parameterId \w+\)"):
        load(tmp_path, smoke_config(), extra_args=extra)


def test_placeholders_come_from_values_and_only_args_need_them_locally(tmp_path):
    path = write(tmp_path, smoke_config())
    tuning = spec.load(path, {}, SAMPLE, placeholders_everywhere=False)
    assert tuning.job.trial_job_spec.base_output_directory.output_uri_prefix == (
        "gs://${BUCKET}/hptuning/ci_smoke")
    with pytest.raises(spec.TrainerError,
                       match=r"containerSpec.imageUri: \$\{PROJECT\} is not set"):
        spec.load(path, {}, SAMPLE)
    document = smoke_config()
    container(document)["args"] += [
        "--train-files=${DATA}/train-*", "--eval-files=${DATA}/eval-*"]
    with pytest.raises(spec.TrainerError, match=r"args\[5\]: \$\{DATA\} is not set; pass --set "
                                                r"DATA=VALUE or export DATA"):
        spec.load(write(tmp_path, document), {}, placeholders_everywhere=False)
    tuning = spec.load(write(tmp_path, document), {"DATA": "/data"},
                       placeholders_everywhere=False)
    assert "--train-files=/data/train-*" in tuning.trainer_args


def params(document):
    return document["studySpec"]["parameters"]


def container_args(tuning):
    return tuning.job.trial_job_spec.worker_pool_specs[0].container_spec.args


def container(document):
    return document["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]


def conditional_model(document, condition=None, child=None):
    params(document)[1] = {
        "parameterId": "model", "categoricalValueSpec": {"values": ["dnn", "cnn"]},
        "conditionalParameterSpecs": [{
            **(condition or {"parentCategoricalValues": {"values": ["cnn"]}}),
            "parameterSpec": child or {"parameterId": "dropout",
                                       "doubleValueSpec": {"minValue": 0.1, "maxValue": 0.5}}}]}


BAD = {
    "unknown field": (
        lambda d: params(d)[0].update(doubleValueSpc=params(d)[0].pop("doubleValueSpec")),
        "studySpec.parameters[0]: unknown field 'doubleValueSpc' "
        "(did you mean 'doubleValueSpec'?)"),
    "unknown top-level field": (
        lambda d: d.update(maxTrialCounts=d.pop("maxTrialCount")),
        ": unknown field 'maxTrialCounts' (did you mean 'maxTrialCount'?)"),
    "output-only field": (lambda d: d.update(state="JOB_STATE_SUCCEEDED"),
                          "state: is output only (set by Vertex); remove it"),
    "bad enum": (lambda d: d["studySpec"]["metrics"][0].update(goal="MAXIMISE"),
                 "studySpec.metrics[0].goal: Invalid enum value MAXIMISE"),
    "wrong type": (lambda d: d.update(maxTrialCount="many"), "maxTrialCount: "),
    "unknown parameter": (
        lambda d: params(d)[0].update(parameterId="learning_rat"),
        "studySpec.parameters[0].parameterId: 'learning_rat' is not a trainer flag "
        "(did you mean 'learning_rate'?)"),
    "min >= max": (
        lambda d: params(d)[0].update(doubleValueSpec={"minValue": 0.5, "maxValue": 0.1}),
        "studySpec.parameters[0].doubleValueSpec: minValue 0.5 must be < maxValue 0.1"),
    "min == max integer": (
        lambda d: params(d).append({"parameterId": "max_steps",
                                    "integerValueSpec": {"minValue": 9, "maxValue": 9}}),
        "studySpec.parameters[2].integerValueSpec: minValue 9 must be < maxValue 9"),
    "wrong metric": (lambda d: d["studySpec"]["metrics"][0].update(metricId="auc"),
                     "studySpec.metrics[0].metricId: 'auc' is not a metric the trainer reports "
                     "(accuracy, loss)"),
    "metric the trainer does not report": (
        lambda d: container(d)["args"].remove("--hypertune-metric=loss"),
        "studySpec.metrics[0].metricId: is 'loss' but the trainer reports 'accuracy'; add "
        "--hypertune-metric=loss to trialJobSpec.workerPoolSpecs[0].containerSpec.args"),
    "two metrics": (lambda d: d["studySpec"]["metrics"].append(
        {"metricId": "accuracy", "goal": "MAXIMIZE"}), "studySpec.metrics: needs exactly one"),
    "no goal": (lambda d: d["studySpec"]["metrics"][0].pop("goal"),
                "studySpec.metrics[0].goal: must be MAXIMIZE or MINIMIZE"),
    "no trials": (lambda d: d.pop("maxTrialCount"), "maxTrialCount: must be at least 1, got 0"),
    "double for an int flag": (
        lambda d: params(d).__setitem__(1, {"parameterId": "batch_size", "doubleValueSpec": {
            "minValue": 10, "maxValue": 100}}),
        "studySpec.parameters[1].doubleValueSpec: --batch-size takes an integer; use "
        "integerValueSpec or discreteValueSpec"),
    "fractional discrete for an int flag": (
        lambda d: params(d)[1].update(discreteValueSpec={"values": [25, 50.5]}),
        "studySpec.parameters[1].discreteValueSpec: --batch-size takes an integer, not 50.5"),
    "number for a choice flag": (
        lambda d: params(d).append({"parameterId": "model",
                                    "integerValueSpec": {"minValue": 1, "maxValue": 3}}),
        "studySpec.parameters[2].integerValueSpec: --model takes one of cnn, cnn_bn, cnn_small, "
        "dnn, efficientnet_v2_b0, mobilenet_v3_small, resnet20, resnet50, resnet56; use "
        "categoricalValueSpec"),
    "categorical value not a choice": (
        lambda d: params(d).append({"parameterId": "model",
                                    "categoricalValueSpec": {"values": ["dnn", "resnet"]}}),
        "studySpec.parameters[2].categoricalValueSpec: 'resnet' is not a choice of --model"),
    "value the trainer rejects": (
        lambda d: params(d).append({"parameterId": "dropout",
                                    "doubleValueSpec": {"minValue": 0.1, "maxValue": 1.0}}),
        "studySpec.parameters[2].doubleValueSpec.maxValue: the trainer rejects --dropout=1: "
        "--dropout must be in [0, 1), got 1.0"),
    "non-positive learning rate": (
        lambda d: params(d)[0].update(doubleValueSpec={"minValue": -0.1, "maxValue": 0.1},
                                      scaleType="UNIT_LINEAR_SCALE"),
        "doubleValueSpec.minValue: the trainer rejects --learning_rate=-0.1: --learning-rate "
        "must be positive"),
    "log scale from zero": (
        lambda d: params(d)[0].update(doubleValueSpec={"minValue": 0, "maxValue": 0.1}),
        "studySpec.parameters[0].doubleValueSpec.minValue: must be > 0 for UNIT_LOG_SCALE"),
    "scale on a categorical": (
        lambda d: params(d).append({"parameterId": "model", "scaleType": "UNIT_LOG_SCALE",
                                    "categoricalValueSpec": {"values": ["dnn"]}}),
        "studySpec.parameters[2].scaleType: must be unset for a categorical parameter"),
    "discrete not increasing": (
        lambda d: params(d)[1].update(discreteValueSpec={"values": [50, 25]}),
        "discreteValueSpec.values: must be in increasing order, each once"),
    "no value spec": (lambda d: params(d)[1].pop("discreteValueSpec"),
                      "studySpec.parameters[1]: needs one of doubleValueSpec"),
    "repeated parameter": (
        lambda d: params(d).append(copy.deepcopy(params(d)[0])),
        "studySpec.parameters[2].parameterId: repeats another parameter"),
    "repeated parameter, other spelling": (
        lambda d: params(d).append({**copy.deepcopy(params(d)[0]),
                                    "parameterId": "learning-rate"}),
        "studySpec.parameters[2].parameterId: repeats another parameter"),
    "tuning the metric flag": (
        lambda d: params(d).append({"parameterId": "hypertune_metric",
                                    "categoricalValueSpec": {"values": ["loss"]}}),
        "--hypertune-metric cannot be tuned"),
    "grid over a double": (lambda d: d["studySpec"].update(algorithm="GRID_SEARCH"),
                           "studySpec.parameters[0].doubleValueSpec: GRID_SEARCH takes only "
                           "INTEGER, DISCRETE and CATEGORICAL"),
    "parent value it cannot take": (
        lambda d: conditional_model(d, {"parentCategoricalValues": {"values": ["cnn_bn"]}}),
        "studySpec.parameters[1].conditionalParameterSpecs[0].parentCategoricalValues.values: "
        "'cnn_bn' is not a value 'model' can take"),
    "condition of the wrong kind": (
        lambda d: conditional_model(d, {"parentIntValues": {"values": [1]}}),
        "studySpec.parameters[1].conditionalParameterSpecs[0]: a CATEGORICAL parent needs "
        "parentCategoricalValues"),
    "bad conditional parameter": (
        lambda d: conditional_model(d, child={"parameterId": "dropout", "doubleValueSpec": {
            "minValue": 0.5, "maxValue": 0.2}}),
        "studySpec.parameters[1].conditionalParameterSpecs[0].parameterSpec.doubleValueSpec: "
        "minValue 0.5 must be < maxValue 0.2"),
    "a command that is not our trainer": (
        lambda d: container(d).update(command=["python", "train.py"]),
        "trialJobSpec.workerPoolSpecs[0].containerSpec.command: must be unset (our image runs "
        "trainer.task) or end in -m trainer.task, got 'python train.py'"),
    "trainer args it rejects": (
        lambda d: container(d)["args"].append("--max-steps=0"),
        "trialJobSpec.workerPoolSpecs[0].containerSpec.args: --max-steps must be positive"),
    "no code to run": (
        lambda d: d["trialJobSpec"]["workerPoolSpecs"][0].pop("containerSpec"),
        "trialJobSpec.workerPoolSpecs[0]: needs containerSpec (our training image) or "
        "pythonPackageSpec: trials run trainer.task"),
    "both container and package": (
        lambda d: d["trialJobSpec"]["workerPoolSpecs"][0].update(
            pythonPackageSpec=as_legacy(smoke_config())),
        "trialJobSpec.workerPoolSpecs[0]: Message type "
        "\"google.cloud.aiplatform.v1.WorkerPoolSpec\" should not have multiple \"task\" oneof "
        "fields"),
    "legacy: not our trainer": (
        lambda d: as_legacy(d).update(pythonModule="trainer.other"),
        "pythonPackageSpec.pythonModule: must be trainer.task"),
    "legacy: trainer args it rejects": (
        lambda d: as_legacy(d)["args"].append("--max-steps=0"),
        "trialJobSpec.workerPoolSpecs[0].pythonPackageSpec.args: --max-steps must be positive"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_config_is_a_one_line_error_naming_file_and_field(case, tmp_path, capsys):
    mutate, expected = BAD[case]
    document = smoke_config()
    mutate(document)
    path = write(tmp_path, document)
    code = tuner_cli.main([str(path), "--output-dir", str(tmp_path / "out"), "--set",
                           "BUCKET=b"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: "), err
    assert expected in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, expected", [
    ("studySpec: [\n", "malformed YAML at line 2, column 1: expected the node content"),
    ("studySpec:\n  metrics: [{metricId: loss}\n  bad", "malformed YAML at line 3"),
    ("- a list\n", "expected a mapping of studySpec, maxTrialCount, trialJobSpec, ..., got list"),
    ("", "got NoneType"),
])
def test_malformed_yaml(text, expected, tmp_path):
    with pytest.raises(spec.TrainerError, match=r"^\S+config.yaml: ") as err:
        load(tmp_path, text)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_bad_set(tmp_path, capsys):
    assert tuner_cli.main([str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read the config (No such file or directory)" in (
        capsys.readouterr().err)
    assert tuner_cli.main([str(tmp_path / "nope.yaml"), "--set", "BUCKET"]) == 2
    assert capsys.readouterr().err == "error: --set 'BUCKET': expected NAME=VALUE\n"


@pytest.mark.parametrize("data, where", [
    ("studySpec: {}\n# Lernrate f\u00fcr die Studie\n".encode("latin-1"), "byte 26 (line 2)"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "byte 0 (line 1)"),
    ("studySpec: {}\n".encode("utf-16"), "byte 0 (line 1)"),
])
def test_a_config_that_is_not_utf8_is_one_line_naming_the_byte(data, where, tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(data)
    assert tuner_cli.main([str(path), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: not UTF-8 at {where}; save the config as UTF-8\n")
    assert not (tmp_path / "out").exists()


def test_the_command_line_error_has_no_traceback_and_no_tensorflow(tmp_path):
    document = smoke_config()
    params(document)[0]["doubleValueSpec"] = {"minValue": 0.5, "maxValue": 0.1}
    path = write(tmp_path, document)
    result = subprocess.run([sys.executable, "-m", "hptuning", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: {path}: studySpec.parameters[0].doubleValueSpec: "
                             "minValue 0.5 must be < maxValue 0.1\n")
    check = ("import sys; from hptuning import spec; "
             "spec.load('hptuning/models.yaml', {'BUCKET': 'b', 'PROJECT': 'p'}, "
             "['--bundled-sample']); "
             "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", check], cwd=REPO, check=True, timeout=60)


# --- the command line: trial counts, trainer flags after --, data -----------------------------

@pytest.mark.parametrize("argv, expected", [
    ([], "error: {path}: no training data: neither the config's trainer args nor those after "
         "-- give --train-files and --eval-files; add them after -- (`-- --train-files PATTERNS "
         "--eval-files PATTERNS`), or `-- --bundled-sample` to tune on the bundled MNIST "
         "sample\n"),
    (["--", "--train-file", "data/x"],
     "error: {path}: trialJobSpec.workerPoolSpecs[0].containerSpec.args (+ the args after --): "
     "unrecognized arguments: --train-file data/x (see `vertex-trainer train --help`)\n"),
    (["--", "--train-files", "data/x"],
     "error: {path}: trialJobSpec.workerPoolSpecs[0].containerSpec.args (+ the args after --): "
     "--eval-files is required (--train-files gives data, and no AIP_DATA_FORMAT is set); give "
     "both --train-files and --eval-files\n"),
    (["--max-trials", "0", "--", *SAMPLE],
     "error: argument --max-trials: expected a positive whole number, got '0' (see --help)\n"),
    (["--parallel-trials", "two", "--", *SAMPLE],
     "error: argument --parallel-trials: expected a positive whole number, got 'two' (see "
     "--help)\n"),
])
def test_bad_tune_command_lines_are_one_line(argv, expected, tmp_path, capsys):
    path = write(tmp_path, smoke_config())
    assert tuner_cli.main([str(path), "--output-dir", str(tmp_path / "out"), *argv]) == 2
    assert capsys.readouterr().err == expected.format(path=path)
    assert not (tmp_path / "out").exists()


def test_the_shipped_studies_never_fall_back_to_the_bundled_sample():
    for config in (REPO / "hptuning").glob("*.yaml"):
        args = container(yaml.safe_load(config.read_text()))["args"]
        assert not any(arg.startswith(("--bundled-sample", "--bundled_sample"))
                       for arg in args), config


def test_max_trials_and_parallel_trials_replace_the_configs(tmp_path):
    tuning = load(tmp_path, smoke_config(), max_trials=7, parallel=3)
    assert (tuning.max_trials, tuning.parallel) == (7, 3)
    assert (tuning.job.max_trial_count, tuning.job.parallel_trial_count) == (7, 3)
    tuning = load(tmp_path, smoke_config())
    assert (tuning.max_trials, tuning.parallel) == (4, 2)


@pytest.mark.parametrize("configured, given, cores, expected", [
    (4, None, 2, (2, "parallelTrialCount 4 capped at the 2 usable cores; --parallel-trials "
                     "overrides")),
    (2, None, 8, (2, "parallelTrialCount 2")),
    (4, 3, 2, (3, "--parallel-trials 3")),
])
def test_local_parallelism_fits_the_machine_unless_told(configured, given, cores, expected):
    assert tuner_cli.local_parallelism(configured, given, cores) == expected


@pytest.mark.parametrize("cpu_max, cap", [("max 100000\n", None), ("150000 100000\n", 2),
                                          ("50000 100000\n", 1), (None, None)])
def test_usable_cores_honour_a_cgroup_quota(cpu_max, cap, tmp_path):
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert tuner_cli.usable_cores(str(path)) == (min(affinity, cap) if cap else affinity)


def test_a_shipped_study_is_found_by_name_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = str(Path(cli.__file__).resolve().parent / "cnn.yaml")
    assert cli.config_path("cnn") == cli.config_path("hptuning/cnn.yaml") == shipped
    (tmp_path / "cnn.yaml").write_text("mine")
    assert cli.config_path("cnn.yaml") == "cnn.yaml"  # a file of that name wins
    assert cli.config_path("nope.yaml") == "nope.yaml"  # left for the one-line error
