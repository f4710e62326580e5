"""The submit script: the exact request offline (--dry-run), and creation through the SDK."""

import datetime
import json
import os
import subprocess
import sys

import pytest
from google.cloud.aiplatform_v1.types import HyperparameterTuningJob, StudySpec

from hptuning import spec, submit
from trainer.cloud import checks
from tests.conftest import REPO
from tests.test_hptuning_spec import SAMPLE, as_legacy, smoke_config, write

DATA = ["--", "--train-files=gs://data/train-*", "--eval-files=gs://data/eval-*"]


def dry_run(*args, data=DATA):
    env = {k: v for k, v in os.environ.items() if k not in ("BUCKET", "PROJECT")}
    return subprocess.run([sys.executable, "-m", "hptuning.submit", *args, "--dry-run", *data],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_dry_run_prints_a_job_the_sdk_parses_back():
    result = dry_run("hptuning/models.yaml", "--set", "BUCKET=test-bucket", "--project", "proj",
                     "--display-name", "models-tuning")
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith("dry run: valid; would create it in "
                                  "projects/proj/locations/us-central1\n")
    assert "- the Artifact Registry repository us-docker.pkg.dev/proj/vertex-trainer: gcloud " \
        "artifacts repositories create vertex-trainer" in result.stderr
    job = HyperparameterTuningJob.from_json(result.stdout, ignore_unknown_fields=False)
    assert job.display_name == "models-tuning"
    assert (job.max_trial_count, job.parallel_trial_count, job.max_failed_trial_count) == (
        24, 4, 6)
    study = job.study_spec
    assert study.metrics[0].metric_id == "accuracy"
    assert study.metrics[0].goal == StudySpec.MetricSpec.GoalType.MAXIMIZE
    assert study.measurement_selection_type == (
        StudySpec.MeasurementSelectionType.BEST_MEASUREMENT)
    model = study.parameters[0]
    assert list(model.categorical_value_spec.values) == ["dnn", "cnn_small", "cnn", "cnn_bn"]
    assert [c.parameter_spec.parameter_id for c in model.conditional_parameter_specs] == [
        "learning_rate", "learning_rate", "dropout"]
    assert model.conditional_parameter_specs[0].parameter_spec.scale_type == (
        StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE)
    pool = job.trial_job_spec.worker_pool_specs[0]
    # --project names our training image, where cloudbuild.yaml pushes it.
    assert pool.container_spec.image_uri == "us-docker.pkg.dev/proj/vertex-trainer/trainer:latest"
    assert pool.container_spec.args[0] == "--hypertune-metric=accuracy"
    assert pool.container_spec.args[-2:] == DATA[1:]  # the trainer flags after --
    assert job.trial_job_spec.base_output_directory.output_uri_prefix == (
        "gs://test-bucket/hptuning/models")
    # The REST shape: camelCase names and enum names, as the config itself.
    document = json.loads(result.stdout)
    assert document["studySpec"]["metrics"] == [{"metricId": "accuracy", "goal": "MAXIMIZE"}]


def test_dry_run_needs_every_placeholder_but_the_project():
    result = dry_run("hptuning/cnn.yaml", "--project", "proj")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: hptuning/cnn.yaml: trialJobSpec.baseOutputDirectory.outputUriPrefix: ${BUCKET} "
        "is not set; pass --set BUCKET=VALUE or export BUCKET\n")


def test_a_dry_run_without_a_project_writes_a_placeholder():
    result = dry_run("hptuning/cnn.yaml", "--set", "BUCKET=b")
    assert result.returncode == 0, result.stderr
    job = HyperparameterTuningJob.from_json(result.stdout, ignore_unknown_fields=False)
    assert job.trial_job_spec.worker_pool_specs[0].container_spec.image_uri == (
        "us-docker.pkg.dev/PROJECT/vertex-trainer/trainer:latest")
    assert "gcloud services enable aiplatform.googleapis.com --project=PROJECT" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--region", "mars-central1", "--dry-run"],
     "error: --region 'mars-central1' is not a Vertex AI region\n"),
    ([], "error: --project is required to submit (or use --dry-run)\n"),
])
def test_bad_flags(args, message, capsys):
    assert submit.main(["hptuning/cnn.yaml", "--set", "BUCKET=b", *args]) == 2
    assert capsys.readouterr().err == message


def test_a_local_base_output_directory_is_refused(tmp_path, capsys):
    config = (REPO / "hptuning" / "ci_smoke.yaml").read_text().replace(
        "outputUriPrefix: gs://${BUCKET}/hptuning/ci_smoke", "outputUriPrefix: /tmp/out")
    path = tmp_path / "local.yaml"
    path.write_text(config)
    assert submit.main([str(path), "--set", "BUCKET=b", "--project", "p", "--dry-run",
                        *DATA]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: trialJobSpec.baseOutputDirectory.outputUriPrefix: must be a gs:// "
        "URI, got '/tmp/out'\n")


class FakeJobServiceClient:
    """Stands in for the gapic client: records the request, returns what Vertex would."""

    requests = []

    def __init__(self, client_options):
        self.endpoint = client_options["api_endpoint"]

    def create_hyperparameter_tuning_job(self, parent, hyperparameter_tuning_job):
        self.requests.append((self.endpoint, parent, hyperparameter_tuning_job))
        created = HyperparameterTuningJob(hyperparameter_tuning_job)
        created.name = f"{parent}/hyperparameterTuningJobs/123"
        return created


@pytest.fixture
def credentials_here(monkeypatch):
    """Credentials on this machine, and no online checks of the prerequisites."""
    monkeypatch.setattr(checks, "adc_present", lambda: True)
    monkeypatch.setattr(checks, "authorized_session", lambda: None)


def test_submit_creates_the_job_and_prints_its_name(monkeypatch, capsys, credentials_here):
    from google.cloud import aiplatform

    monkeypatch.setattr(aiplatform.gapic, "JobServiceClient", FakeJobServiceClient)
    code = submit.main(["hptuning/cnn.yaml", "--project", "proj", "--region", "europe-west4",
                        "--set", "BUCKET=bkt", *DATA])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "projects/proj/locations/europe-west4/hyperparameterTuningJobs/123\n"
    assert "gcloud ai hp-tuning-jobs describe 123 --project proj --region europe-west4" in err
    endpoint, parent, job = FakeJobServiceClient.requests[-1]
    assert endpoint == "europe-west4-aiplatform.googleapis.com"
    assert parent == "projects/proj/locations/europe-west4"
    assert job.display_name.startswith("cnn-")
    assert job.trial_job_spec.worker_pool_specs[0].container_spec.image_uri == (
        "us-docker.pkg.dev/proj/vertex-trainer/trainer:latest")


def test_a_refusal_is_a_one_line_error(monkeypatch, capsys, credentials_here):
    from google.api_core import exceptions
    from google.cloud import aiplatform

    class Refusing(FakeJobServiceClient):
        def create_hyperparameter_tuning_job(self, parent, hyperparameter_tuning_job):
            raise exceptions.PermissionDenied("aiplatform.hyperparameterTuningJobs.create denied")

    monkeypatch.setattr(aiplatform.gapic, "JobServiceClient", Refusing)
    assert submit.main(["hptuning/cnn.yaml", "--project", "proj", "--set", "BUCKET=b",
                        *DATA]) == 1
    assert capsys.readouterr().err == ("error: Vertex AI refused the job: "
                                       "aiplatform.hyperparameterTuningJobs.create denied\n")


def test_a_container_without_an_image_is_refused(tmp_path, capsys):
    document = smoke_config()
    del document["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    path = write(tmp_path, document)
    assert submit.main([str(path), "--set", "BUCKET=b", "--dry-run", *DATA]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {path}: trialJobSpec.workerPoolSpecs[0].containerSpec.imageUri: is required: "
        "our training image")


@pytest.mark.parametrize("today, warned", [(datetime.date(2026, 7, 11), False),
                                           (datetime.date(2026, 7, 12), True)])
def test_a_legacy_package_job_is_sent_as_given_and_warns_past_the_image_end(tmp_path, capsys,
                                                                           today, warned):
    document = smoke_config()
    as_legacy(document)
    tuning = spec.load(write(tmp_path, document), {"BUCKET": "b", "PROJECT": "p"}, SAMPLE)
    job = submit.request_job(tuning, "legacy", today)
    package = job.trial_job_spec.worker_pool_specs[0].python_package_spec
    assert package.package_uris == ["gs://b/vertex-trainer-0.1.0.tar.gz"]
    assert package.python_module == "trainer.task" and package.args[0] == "--model=dnn"
    err = capsys.readouterr().err
    assert (err == "warning: us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest "
                   "reached its end of availability on 2026-07-11 and Vertex may refuse it; run "
                   "our training image instead (containerSpec)\n") if warned else err == ""


def test_trial_counts_and_trainer_flags_from_the_command_line():
    result = dry_run("hptuning/cnn.yaml", "--set", "BUCKET=b", "--project", "p", "--max-trials",
                     "6", "--parallel-trials", "2",
                     data=["--", "--train-files", "gs://b/train-*", "--eval-files",
                           "/gcs/b/eval-*", "--max-steps=500"])
    assert result.returncode == 0, result.stderr
    job = HyperparameterTuningJob.from_json(result.stdout, ignore_unknown_fields=False)
    assert (job.max_trial_count, job.parallel_trial_count) == (6, 2)
    assert list(job.trial_job_spec.worker_pool_specs[0].container_spec.args)[-5:] == [
        "--train-files", "gs://b/train-*", "--eval-files", "/gcs/b/eval-*", "--max-steps=500"]


ARGS = "trialJobSpec.workerPoolSpecs[0].containerSpec.args"


@pytest.mark.parametrize("data, message", [
    ([], "no training data: neither the config's trainer args nor those after -- give "
         "--train-files and --eval-files"),
    (["--", "--train-files=gs://b/t", "--eval-file=gs://b/e"],
     f"{ARGS} (+ the args after --): unrecognized arguments: --eval-file=gs://b/e (see "
     "`vertex-trainer train --help`)"),
    (["--", "--train-files", "data/train-*", "--eval-files", "gs://b/e"],
     "the args after --: --train-files 'data/train-*' is a local path, which a Vertex trial "
     "cannot read; upload it (gcloud storage cp -r) and give its gs:// (or /gcs/) path"),
    (["--", "--train-files", "gs://b/t,/tmp/more-*", "--eval-files", "gs://b/e"],
     "the args after --: --train-files '/tmp/more-*' is a local path"),
    (["--", "--bundled-sample", "--label-map", "labels.txt"],
     "the args after --: --label-map 'labels.txt' is a local path"),
])
def test_bad_trainer_flags_are_one_line_before_anything_is_sent(data, message):
    result = dry_run("hptuning/cnn.yaml", "--set", "BUCKET=b", "--project", "p", data=data)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: hptuning/cnn.yaml: {message}")
    assert result.stderr.count("\n") == 1


def test_a_local_path_in_the_configs_own_args_is_refused_naming_the_field(tmp_path, capsys):
    document = smoke_config()
    document["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"] += [
        "--train-files=/data/train-*", "--eval-files=/data/eval-*"]
    path = write(tmp_path, document)
    assert submit.main([str(path), "--set", "BUCKET=b", "--project", "p", "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: {ARGS}: --train-files '/data/train-*' is a local path, which a Vertex "
        "trial cannot read; upload it (gcloud storage cp -r) and give its gs:// (or /gcs/) "
        "path\n")


def test_missing_credentials_stop_the_submission_before_anything_is_sent(monkeypatch, capsys):
    from google.cloud import aiplatform

    monkeypatch.setattr(checks, "adc_present", lambda: False)
    monkeypatch.setattr(aiplatform.gapic, "JobServiceClient", FakeJobServiceClient)
    sent = len(FakeJobServiceClient.requests)
    assert submit.main(["hptuning/cnn.yaml", "--project", "proj", "--set", "BUCKET=b",
                        *DATA]) == 1
    err = capsys.readouterr().err
    assert "application-default credentials on this machine: gcloud auth " \
           "application-default login" in err and err.count("\n") == 1
    assert len(FakeJobServiceClient.requests) == sent
