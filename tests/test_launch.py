"""`vertex-trainer launch`: the dry-run's request chain for each kind of DATA, every request as
the aiplatform SDK's types parse it, the local plan against the Vertex one, and the checks that
refuse a launch before anything is spent. (The --local run itself: tests/test_installed.py.)"""

from __future__ import annotations

import base64
import json
import re

import pytest
from google.cloud.aiplatform_v1 import types

from trainer.cloud import launch
from tests.conftest import REPO
from tests.image_data import make_image_set
from tests.test_gcs import gcs  # noqa: F401  (the emulator fixture, started per module)

HEADER = re.compile(r"^# (\d+)\. (.+?)(?: \(aiplatform_v1\.(\w+)\)|: command)$", re.M)
REQUEST_STEPS = ["train", "uploadModel", "createEndpoint", "deployModel", "rawPredict"]


def parse(out: str) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str, dict]], list[str]]:
    """(commands, requests (step, type, body), prerequisites) of a rendered plan."""
    commands, requests = [], []
    blocks = re.split(r"\n\n(?=# )", out.strip())
    prerequisites = []
    for block in blocks:
        header, _, rest = block.partition("\n")
        if header.startswith("# prerequisites"):
            prerequisites = [line[2:] for line in rest.splitlines()]
            continue
        found = HEADER.match(header)
        assert found, header
        _, step, type_name = found.groups()
        if type_name is None:
            commands.append((step, rest.split()))
        else:
            body = rest.split("\n", 1)[1] if rest.startswith("# ") else rest  # a note first
            requests.append((step, type_name, json.loads(body)))
    return commands, requests, prerequisites


def dry_run(capsys, *argv: str):
    assert launch.main(["--dry-run", *argv]) == 0, capsys.readouterr().err
    return parse(capsys.readouterr().out)


def parsed(type_name: str, body: dict):
    """The body as its SDK type, and back: unknown or mistyped fields would raise or differ."""
    message_type = getattr(types, type_name)
    message = message_type.from_json(json.dumps(body))
    assert json.loads(message_type.to_json(message, including_default_value_fields=False,
                                           use_integers_for_enums=False)) == body
    return message


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Class folders of digit photos (the train split of tests/image_data's set)."""
    return make_image_set(tmp_path_factory.mktemp("photos"), train=60, evaluation=0, test=0)


TRAINER = ["--max-steps", "50", "--model", "dnn"]


@pytest.fixture
def from_checkout(monkeypatch):
    """As run from a source checkout, whose cloudbuild.yaml Cloud Build is given (installed
    without one, a context is generated first: tests/test_submit.py)."""
    from trainer.containers import images

    monkeypatch.setattr(images, "checkout", lambda: REPO)


def test_a_photo_folder_is_prepared_uploaded_built_trained_deployed_and_smoke_tested(
        capsys, photos, from_checkout):
    commands, requests, prerequisites = dry_run(
        capsys, str(photos.train_dir), "--bucket", "gs://b/digits", "--project", "p", "--",
        *TRAINER)
    assert [step for step, _ in commands] == ["prepare", "build"]
    prepare = commands[0][1]
    data_dir = prepare[prepare.index("--output-dir") + 1]
    assert prepare[:4] == ["vertex-trainer", "prepare", "--input", str(photos.train_dir)]
    assert re.fullmatch(r"gs://b/digits/runs/vertex-trainer-\d{8}-\d{6}/data", data_dir)
    assert commands[1][1][:3] == ["gcloud", "builds", "submit"]
    assert [(step, type_name) for step, type_name, _ in requests] == [
        ("train", "CustomJob"), ("uploadModel", "UploadModelRequest"),
        ("createEndpoint", "CreateEndpointRequest"), ("deployModel", "DeployModelRequest"),
        ("rawPredict", "RawPredictRequest")]
    bodies = {step: parsed(type_name, body) for step, type_name, body in requests}

    run_dir = data_dir.rsplit("/", 1)[0]
    container = bodies["train"].job_spec.worker_pool_specs[0].container_spec
    assert list(container.args) == ["--train-files", f"{data_dir}/train-*", "--eval-files",
                                    f"{data_dir}/eval-*", *TRAINER]
    assert container.image_uri.startswith("us-docker.pkg.dev/p/vertex-trainer/trainer:")
    assert bodies["train"].job_spec.base_output_directory.output_uri_prefix == run_dir
    model = bodies["uploadModel"].model
    assert model.artifact_uri == f"{run_dir}/model"  # where Vertex's AIP_MODEL_DIR points
    assert model.container_spec.image_uri.startswith("us-docker.pkg.dev/p/vertex-trainer/serving:")
    assert model.container_spec.image_uri.split(":")[-1] == container.image_uri.split(":")[-1]

    # The smoke prediction classifies an image prepare holds out of training (eval split).
    smoke = json.loads(bodies["rawPredict"].http_body.data)
    assert smoke["signature_name"] == "encoded_image"
    sent = base64.b64decode(smoke["instances"][0]["image_bytes"]["b64"])
    from trainer.tools.prepare_images import list_images

    held_out = [e for e in list_images(str(photos.train_dir), 0.1) if e.split == "eval"]
    assert sent in [open(e.uri, "rb").read() for e in held_out]
    assert any("gcloud storage buckets create gs://b " in line for line in prerequisites)
    assert any("gcloud services enable cloudbuild.googleapis.com --project=p" in line
               for line in prerequisites)


def test_split_folders_keep_their_splits_and_the_smoke_image_is_from_eval(capsys, tmp_path):
    # ROOT/{train,eval}/CLASS, as `vertex-trainer sample-photos` writes: launch read train/ and
    # eval/ as two classes ("class folder .../eval holds no images") and passed prepare an
    # --eval-fraction, which split folders refuse.
    images = make_image_set(tmp_path / "digits", train=20, evaluation=10, test=0)
    out = str(tmp_path / "out")
    commands, requests, _ = dry_run(capsys, str(images.root), "--local", "--output-dir", out,
                                    "--", *TRAINER)
    assert "--eval-fraction" not in dict(commands)["prepare"]
    bodies = {step: parsed(type_name, body) for step, type_name, body in requests}
    smoke = json.loads(bodies["rawPredict"].http_body.data)
    sent = base64.b64decode(smoke["instances"][0]["image_bytes"]["b64"])
    assert sent in [path.read_bytes() for path, _ in images.eval_files]
    # A fraction cannot apply where every image has its split: one line, as prepare says it.
    assert launch.main([str(images.root), "--local", "--dry-run", "--eval-fraction", "0.2",
                        "--output-dir", out]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: --eval-fraction: every image of ")


def test_a_gs_manifest_is_read_as_it_is_and_the_smoke_image_chosen_once_trained(capsys):
    commands, requests, _ = dry_run(capsys, "gs://b/digits.jsonl", "--bucket", "gs://b/runs",
                                    "--build", "local")
    assert [step for step, _ in commands] == [
        "build context", "build training image", "build serving image", "push training image",
        "push serving image"]
    train = parsed("CustomJob", requests[0][2])
    assert list(train.job_spec.worker_pool_specs[0].container_spec.args) == [
        "--train-files", "gs://b/digits.jsonl", "--eval-files", "gs://b/digits.jsonl"]
    for step, type_name, body in requests:
        parsed(type_name, body)
    smoke = json.loads(base64.b64decode(requests[-1][2]["httpBody"]["data"]))
    assert smoke["instances"][0]["image_bytes"]["b64"] == launch.HELD_BACK_PLACEHOLDER


@pytest.mark.parametrize("dataset", ["1234567890",
                                     "projects/p/locations/us-central1/datasets/1234567890"])
def test_a_managed_dataset_trains_in_a_pipeline_whose_input_names_it(capsys, dataset,
                                                                    from_checkout):
    commands, requests, _ = dry_run(capsys, dataset, "--bucket", "gs://b/flowers", "--project",
                                    "p", "--", *TRAINER)
    assert [step for step, _ in commands] == ["build"]  # nothing to prepare: Vertex exports it
    assert [step for step, _, _ in requests] == REQUEST_STEPS
    step, type_name, body = requests[0]
    assert type_name == "TrainingPipeline"
    pipeline = parsed(type_name, body)
    config = pipeline.input_data_config
    assert config.dataset_id == "1234567890"
    run_dir = config.gcs_destination.output_uri_prefix
    assert re.fullmatch(r"gs://b/flowers/runs/vertex-trainer-\d{8}-\d{6}", run_dir)
    # No data flags: the trainer reads the AIP_*_DATA_URI variables Vertex sets from this.
    spec = types.CustomJobSpec.from_json(json.dumps(body["trainingTaskInputs"]))
    assert list(spec.worker_pool_specs[0].container_spec.args) == TRAINER
    assert spec.base_output_directory.output_uri_prefix == run_dir
    for step, type_name, body in requests[1:]:
        parsed(type_name, body)


def test_the_local_plan_is_the_vertex_plan_on_this_machine(capsys, photos, tmp_path):
    """The same steps and requests; only where things live (local paths, local image tags)
    differs, which the local executor needs."""
    _, cloud, _ = dry_run(capsys, str(photos.train_dir), "--bucket", "gs://b/digits", "--",
                          *TRAINER)
    commands, local, prerequisites = dry_run(
        capsys, str(photos.train_dir), "--local", "--output-dir", str(tmp_path), "--", *TRAINER)
    assert prerequisites == []
    assert [step for step, _ in commands] == ["prepare", "build context", "build training image",
                                              "build serving image"]
    assert [(s, t) for s, t, _ in local] == [(s, t) for s, t, _ in cloud]
    cloud_bodies = {step: body for step, _, body in cloud}

    def normalized(body: dict) -> str:
        text = json.dumps(body)
        text = re.sub(r'(gs://b/digits|%s)/runs/[^/"]+' % re.escape(str(tmp_path)), "RUN", text)
        return re.sub(r'"[^"]*vertex-trainer/(trainer|serving):[^"]+"', r'"IMAGE-\1"', text)

    for step, type_name, body in local:
        parsed(type_name, body)
        assert "gs://" not in json.dumps(body), step
        assert normalized(body) == normalized(cloud_bodies[step]), step
    train = {step: body for step, _, body in local}["train"]
    assert train["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == \
        launch.LOCAL_IMAGES["training"]
    assert train["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"].startswith(
        str(tmp_path / "runs"))


@pytest.mark.parametrize("argv, message", [
    (["{photos}", "--bucket", "gs://b", "--", "--max-step", "5"],
     "error: trainer flags after --: unrecognized arguments: --max-step 5 (see vertex-trainer "
     "train --help)"),
    (["{photos}", "--bucket", "gs://b", "--", "--train-files", "gs://b/x"],
     "error: trainer flags after --: DATA gives the data; drop --train-files"),
    (["gs://b/d.jsonl", "--bucket", "gs://b", "--", "--label-map", "/tmp/labels.txt"],
     "error: trainer flags after --: --label-map /tmp/labels.txt is a path on this machine, "
     "which a Vertex job cannot read"),
    (["{photos}"], "error: --bucket is missing: a Vertex run keeps its data, checkpoints and "
                   "export in gs://"),
    (["{photos}", "--bucket", "/tmp/out"], "error: --bucket must be gs://BUCKET[/PREFIX]"),
    (["gs://b/d.jsonl", "--local"], "error: --local trains on this machine's files: DATA "
                                    "gs://b/d.jsonl lives on Google Cloud"),
    (["{photos}/nope"], "error: DATA: {photos}/nope does not exist (expected a photo folder"),
    (["PHOTOS", "--project", "p", "--bucket", "gs://b/x"],
     "error: DATA: PHOTOS does not exist (expected a photo folder ROOT/CLASS/image, a .csv/"
     ".jsonl manifest, a gs:// URI or a managed dataset ID: a number or projects/P/locations/R/"
     "datasets/N)"),
    (["{repo}/setup.py"], "error: DATA: {repo}/setup.py is neither a photo folder (ROOT/CLASS/"
                          "image), a .csv/.jsonl manifest"),
    (["{photos}", "--bucket", "gs://b", "--stop"], "error: --stop is for --local runs"),
    (["gs://b/photos/", "--bucket", "gs://b"], "error: DATA gs://b/photos is a gs:// folder, "
                                               "which holds out no image for the smoke "
                                               "prediction: give --predict-image FILE"),
    (["123", "--bucket", "gs://b", "--tune", "hptuning/cnn.yaml"],
     "error: --tune runs its study on this machine: use it with --local"),
    (["{photos}", "--bucket", "gs://b", "--training-image", "i"],
     "error: --training-image and --serving-image go together"),
    (["123", "--bucket", "gs://b", "--region", "europe-west4", "--dataset-typo"],
     "error: unrecognized arguments: --dataset-typo"),
    (["projects/p/locations/europe-west4/datasets/5", "--bucket", "gs://b"],
     "is in europe-west4, the job in --region us-central1"),
])
def test_bad_launches_are_one_line_errors_before_anything_runs(capsys, photos, argv, message):
    argv = [arg.format(photos=photos.train_dir, repo=REPO) for arg in argv]
    assert launch.main(["--dry-run", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    assert message.format(photos=photos.train_dir, repo=REPO) in err


def test_launching_on_vertex_needs_a_project(capsys, photos):
    assert launch.main([str(photos.train_dir), "--bucket", "gs://b"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --project is required to launch on Vertex (or use --local or --dry-run)")


def test_a_vertex_run_without_credentials_stops_before_creating_anything_here(
        capsys, photos, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    assert launch.main([str(photos.train_dir), "--project", "p", "--bucket", "gs://b/digits",
                        "--training-image", "us-docker.pkg.dev/p/r/t:1", "--serving-image",
                        "us-docker.pkg.dev/p/r/s:1", "--output-dir",
                        str(tmp_path / "launch-output")]) == 1
    assert capsys.readouterr().err == ("error: missing application-default credentials on this "
                                       "machine: gcloud auth application-default login\n")
    assert not (tmp_path / "launch-output").exists()


TINY_STUDY = """\
studySpec:
  metrics: [{metricId: loss, goal: MINIMIZE}]
  parameters:
  - parameterId: learning_rate
    doubleValueSpec: {minValue: 0.001, maxValue: 0.3}
    scaleType: UNIT_LOG_SCALE
maxTrialCount: 2
parallelTrialCount: 2
trialJobSpec:
  workerPoolSpecs:
  - machineSpec: {machineType: n1-standard-4}
    replicaCount: 1
    containerSpec:
      imageUri: us-docker.pkg.dev/p/vertex-trainer/trainer:latest
      args: [--model=dnn, --hypertune-metric=loss, --max-steps=10, --eval-every-steps=10,
             --log-every-steps=10, --mixed-precision=none]
  baseOutputDirectory: {outputUriPrefix: gs://b/hptuning/tiny}
"""


def test_tune_runs_the_study_on_the_prepared_data_and_returns_the_best_trials_flags(
        photos, tmp_path):
    from trainer.cloud import checks

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_STUDY)
    args = launch.build_parser().parse_args([str(photos.train_dir), "--local", "--tune",
                                             str(config), "--output-dir", str(tmp_path)])
    data = launch.classify(args.data)
    where = launch.layout(args, data, "run")
    launch.prepare(data, where, args.eval_fraction)
    flags = launch.tune(args, data, where, ["--batch-size", "20"])

    results = json.loads((where.local_dir / "tune" / "results.json").read_text())
    assert [t["state"] for t in results["trials"]] == ["SUCCEEDED", "SUCCEEDED"]
    best = next(t for t in results["trials"] if t["trial_id"] == results["bestTrial"])
    assert best["value"] == min(t["value"] for t in results["trials"])
    assert flags == [f"--learning_rate={best['parameters']['learning_rate']}"]
    assert checks.trainer_flags(flags).learning_rate == best["parameters"]["learning_rate"]


def photos_on_gcs(emulator, monkeypatch, tmp_path, prefix: str) -> list[dict]:
    """Digit photos under gs://bkt/PREFIX/images/ and their Vertex JSONL manifest (ml_use
    training, validation, test) as gs://bkt/PREFIX/all.jsonl, clients pointed at the emulator;
    returns the manifest's items."""
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    images = make_image_set(tmp_path / "images", train=4, evaluation=2, test=2)
    items = [json.loads(line) for line in images.jsonl.read_text().splitlines()]
    for item in items:
        item["imageGcsUri"] = item["imageGcsUri"].replace(str(tmp_path), f"gs://bkt/{prefix}")
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest" / "all.jsonl").write_text("\n".join(json.dumps(i) for i in items))
    emulator.upload(tmp_path / "images", "bkt", f"{prefix}/images")
    emulator.upload(tmp_path / "manifest", "bkt", prefix)
    return items


def test_a_vertex_runs_smoke_image_is_a_held_out_item_of_its_data(
        gcs, monkeypatch, tmp_path):  # noqa: F811
    """Read on Cloud Storage (the emulator) once the job ran: a gs:// manifest's first test
    item, or the test split Vertex exported from a managed dataset under the run."""
    items = photos_on_gcs(gcs, monkeypatch, tmp_path, "launch")
    export = tmp_path / "export" / "run" / "dataset-9-image-2026"
    export.mkdir(parents=True)
    validation = [i for i in items if "validation" in json.dumps(i)]
    (export / "validation-00000-of-00001.jsonl").write_text(
        "\n".join(json.dumps(i) for i in validation))
    gcs.upload(tmp_path / "export", "bkt", "launch")
    where = launch.Layout(None, "gs://bkt/launch/run", tmp_path / "local")

    def label_of(item):
        return item["classificationAnnotation"]["displayName"]

    for data, expected in ((launch.Data("manifest", "gs://bkt/launch/all.jsonl"),
                            next(i for i in items if "\"test\"" in json.dumps(i))),
                           (launch.Data("dataset", "9"), validation[0])):
        held = launch.held_out_on_gcs(where, data)
        local = expected["imageGcsUri"].replace("gs://bkt/launch", str(tmp_path))
        assert open(held.path, "rb").read() == open(local, "rb").read()
        assert held.label == label_of(expected)


class _Done:
    def __init__(self, result):
        self._result = result

    def result(self, timeout):
        return self._result


def test_on_vertex_the_plan_runs_in_order_with_the_names_each_step_creates(
        gcs, monkeypatch, tmp_path, capsys):  # noqa: F811
    """The Vertex executor against stand-in aiplatform clients (nothing leaves this machine),
    the data and the held-out image on the GCS emulator, the prerequisites' GETs answered by a
    local server."""
    from google.api import httpbody_pb2

    from google.cloud import aiplatform_v1
    from tests.test_checks import Rebased, api
    from trainer.cloud import checks

    items = photos_on_gcs(gcs, monkeypatch, tmp_path, "vertex")
    test_item = next(i for i in items if '"test"' in json.dumps(i))
    (tmp_path / "key.json").write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))

    location = "projects/p/locations/us-central1"
    sent = []

    class Client:
        def __init__(self, client_options):
            assert client_options == {"api_endpoint": "us-central1-aiplatform.googleapis.com"}

        def create_custom_job(self, parent, custom_job):
            sent.append(("job", custom_job))
            return types.CustomJob(name=f"{location}/customJobs/5")

        def get_custom_job(self, name):
            return types.CustomJob(name=name, state=types.JobState.JOB_STATE_SUCCEEDED)

        def upload_model(self, request):
            sent.append(("upload", request))
            return _Done(types.UploadModelResponse(model=f"{location}/models/42"))

        def create_endpoint(self, request):
            sent.append(("endpoint", request))
            return _Done(types.Endpoint(name=f"{location}/endpoints/7"))

        def deploy_model(self, request):
            sent.append(("deploy", request))
            return _Done(types.DeployModelResponse(deployed_model=types.DeployedModel(id="9")))

        def raw_predict(self, request):
            sent.append(("predict", request))
            return httpbody_pb2.HttpBody(data=b'{"predictions": [{"labels": "three"}]}')

    for name in ("JobServiceClient", "ModelServiceClient", "EndpointServiceClient",
                 "PredictionServiceClient"):
        monkeypatch.setattr(aiplatform_v1, name, Client)
    with api({}, otherwise=(200, {"state": "ENABLED"})) as base:
        monkeypatch.setattr(checks, "authorized_session", lambda: Rebased(base))
        code = launch.main(["gs://bkt/vertex/all.jsonl", "--project", "p", "--bucket",
                            "gs://bkt/vertex", "--training-image", "us-docker.pkg.dev/p/r/t:1",
                            "--serving-image", "us-docker.pkg.dev/p/r/s:1", "--poll-secs", "0",
                            "--output-dir", str(tmp_path / "out"), "--", "--max-steps", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [what for what, _ in sent] == ["job", "upload", "endpoint", "deploy", "predict"]
    job = sent[0][1]
    run_dir = job.job_spec.base_output_directory.output_uri_prefix
    assert list(job.job_spec.worker_pool_specs[0].container_spec.args) == [
        "--train-files", "gs://bkt/vertex/all.jsonl", "--eval-files",
        "gs://bkt/vertex/all.jsonl", "--max-steps", "5"]
    assert sent[1][1].model.artifact_uri == f"{run_dir}/model"
    assert sent[1][1].model.container_spec.image_uri == "us-docker.pkg.dev/p/r/s:1"
    assert sent[3][1].endpoint == f"{location}/endpoints/7"
    assert sent[3][1].deployed_model.model == f"{location}/models/42"
    smoke = json.loads(sent[4][1].http_body.data)
    image = base64.b64decode(smoke["instances"][0]["image_bytes"]["b64"])
    assert image == open(test_item["imageGcsUri"].replace("gs://bkt/vertex", str(tmp_path)),
                         "rb").read()
    lines = out.splitlines()
    assert "  logs: gcloud ai custom-jobs stream-logs 5 --project=p --region=us-central1" in lines
    assert f"endpoint: {location}/endpoints/7" in lines
    assert lines[-1].startswith(
        "curl -X POST -H \"Authorization: Bearer $(gcloud auth print-access-token)\" -H "
        "'Content-Type: application/json' https://us-central1-aiplatform.googleapis.com/v1/"
        f"{location}/endpoints/7:rawPredict -d @{tmp_path / 'out' / 'runs'}")


def test_the_training_container_sees_the_run_the_working_directory_and_named_files(
        monkeypatch, tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "weights"
    work.mkdir()
    monkeypatch.chdir(work)
    assert launch.mounts("/runs/r", [
        "--label-map", "labels.txt", "--pretrained-weights", f"{elsewhere}/b.weights.h5",
        "--init-checkpoint", "gs://b/ckpt"]) == sorted([
            "/runs/r:/runs/r", f"{work}:{work}:ro", f"{elsewhere}:{elsewhere}:ro"])
    assert launch.mounts("/runs/r", ["--pretrained-weights", "imagenet"]) == sorted([
        "/runs/r:/runs/r", f"{work}:{work}:ro"])
