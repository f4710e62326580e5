"""Offline proofs for deployment: SDK-checked requests, bodies our server answers, the image."""

import base64
import json
import re
import subprocess
import sys

import pytest
from google.cloud.aiplatform_v1 import types
from google.protobuf import json_format

from trainer.cloud import checks
from trainer.cloud import deploy as deploy_model
from tests.conftest import REPO
from tests.exports import DIGITS, export_model, images, png
from tests.serving import request, server_thread
from tests.test_checks import Rebased, api
from tests.test_launch import parse

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deploy")
    pixels = images(2)
    (directory / "a.png").write_bytes(png(pixels[0]))
    (directory / "b.png").write_bytes(png(pixels[1]))
    (directory / "body.json").write_text(json.dumps({
        "instances": [{"image_bytes": {"b64": base64.b64encode(png(pixels[0])).decode()}}],
        "parameters": {"signature_name": "encoded_image"}}))
    return directory


def dry_run(capsys, *argv):
    """{step: body} of the rendered plan's requests."""
    assert deploy_model.main(["--dry-run", "--artifact-uri", "gs://b/runs/1/model", *argv]) == 0, \
        capsys.readouterr().err
    commands, requests, _ = parse(capsys.readouterr().out)
    assert not commands
    return {step: body for step, _, body in requests}


SHAPES = {
    "our-default-image": [],
    "prebuilt-cpu": ["--prebuilt-image"],
    "prebuilt-gpu-existing-endpoint": ["--prebuilt-image", "--accelerator-type", "NVIDIA_TESLA_T4",
                                       "--accelerator-count", "1", "--endpoint", "123",
                                       "--project", "p", "--region", "europe-west4"],
    "our-container": ["--container-image-uri", "us-docker.pkg.dev/p/r/serve:abc",
                      "--min-replicas", "2", "--max-replicas", "4", "--service-account",
                      "sa@p.iam.gserviceaccount.com",
                      "--endpoint", "projects/p/locations/us-central1/endpoints/9"],
    "predict-json": ["--predict-json", "{files}/body.json"],
    "predict-image": ["--predict-image", "{files}/a.png", "--predict-image", "{files}/b.png"],
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_dry_run_requests_parse_back_unchanged_with_the_sdk_types(capsys, files, shape):
    requests = dry_run(capsys, *[arg.format(files=files) for arg in SHAPES[shape]])
    assert list(requests)[0] == "uploadModel" and "deployModel" in requests
    for key, body in requests.items():
        message_type = getattr(types, deploy_model.REQUEST_TYPES[key])
        message = message_type.from_json(json.dumps(body))  # unknown fields would raise
        assert json_format.MessageToDict(message_type.pb(message)) == body


def test_the_dry_run_numbers_each_request_and_lists_the_prerequisites(capsys):
    assert deploy_model.main(["--dry-run", "--artifact-uri", "gs://b/runs/1/model"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^# \d+\. .+$", out, re.M) == [
        "# 1. uploadModel (aiplatform_v1.UploadModelRequest)",
        "# 2. createEndpoint (aiplatform_v1.CreateEndpointRequest)",
        "# 3. deployModel (aiplatform_v1.DeployModelRequest)"]
    assert parse(out)[2] == [
        "application-default credentials on this machine: gcloud auth application-default login",
        "the aiplatform.googleapis.com API enabled in PROJECT: gcloud services enable "
        "aiplatform.googleapis.com --project=PROJECT",
        "the storage.googleapis.com API enabled in PROJECT: gcloud services enable "
        "storage.googleapis.com --project=PROJECT",
        "the Artifact Registry repository us-docker.pkg.dev/PROJECT/vertex-trainer: gcloud "
        "artifacts repositories create vertex-trainer --repository-format=docker "
        "--location=us --project=PROJECT",
        "the bucket gs://b: gcloud storage buckets create gs://b --project=PROJECT "
        "--location=REGION"]
    # Vertex's prebuilt image is in Vertex's repository, not one the project creates.
    assert deploy_model.main(["--dry-run", "--artifact-uri", "gs://b/m", "--prebuilt-image"]) == 0
    assert "Artifact Registry" not in capsys.readouterr().out


def test_missing_credentials_stop_the_deployment_before_any_client_is_made(
        monkeypatch, capsys, files, tmp_path):
    from google.cloud import aiplatform_v1

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    for name in ("ModelServiceClient", "EndpointServiceClient", "PredictionServiceClient"):
        monkeypatch.setattr(aiplatform_v1, name, None)  # calling one would raise
    assert deploy_model.main(["--project", "p", "--artifact-uri", "gs://b/runs/cnn-1/model",
                              "--predict-image", str(files / "a.png")]) == 1
    assert capsys.readouterr().err == ("error: missing application-default credentials on this "
                                       "machine: gcloud auth application-default login\n")


def test_requests_carry_the_image_resources_and_endpoint(capsys, files):
    plain = dry_run(capsys)
    assert plain["uploadModel"]["model"]["containerSpec"] == {
        "imageUri": "us-docker.pkg.dev/PROJECT/vertex-trainer/serving:latest",
        "predictRoute": "/predict", "healthRoute": "/health", "ports": [{"containerPort": 8080}]}
    assert plain["createEndpoint"]["parent"] == "projects/PROJECT/locations/us-central1"
    assert plain["deployModel"]["trafficSplit"] == {"0": 100}

    prebuilt = dry_run(capsys, *SHAPES["prebuilt-cpu"])
    assert prebuilt["uploadModel"]["model"]["containerSpec"] == {
        "imageUri": "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"}

    gpu = dry_run(capsys, *SHAPES["prebuilt-gpu-existing-endpoint"])
    assert gpu["uploadModel"]["model"]["containerSpec"]["imageUri"] == (
        "us-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest")
    assert "createEndpoint" not in gpu
    assert gpu["deployModel"]["endpoint"] == "projects/p/locations/europe-west4/endpoints/123"
    machine = gpu["deployModel"]["deployedModel"]["dedicatedResources"]["machineSpec"]
    assert machine == {"machineType": "n1-standard-2", "acceleratorType": "NVIDIA_TESLA_T4",
                       "acceleratorCount": 1}

    ours = dry_run(capsys, *SHAPES["our-container"])
    assert ours["uploadModel"]["model"]["containerSpec"] == {
        "imageUri": "us-docker.pkg.dev/p/r/serve:abc", "predictRoute": "/predict",
        "healthRoute": "/health", "ports": [{"containerPort": 8080}]}
    resources = ours["deployModel"]["deployedModel"]["dedicatedResources"]
    assert (resources["minReplicaCount"], resources["maxReplicaCount"]) == (2, 4)


def test_prediction_bodies_are_answered_by_our_server(capsys, files, tmp_path):
    json_request = dry_run(capsys, "--predict-json", str(files / "body.json"))["predict"]
    raw_request = dry_run(capsys, "--predict-image", str(files / "a.png"))["rawPredict"]
    raw_body = base64.b64decode(raw_request["httpBody"]["data"])
    assert json.loads(raw_body)["signature_name"] == "encoded_image"
    _, model_dir = export_model(tmp_path / "model", class_names=DIGITS)
    with server_thread(model_dir) as port:
        # Vertex forwards predict's instances and parameters as the body; rawPredict's as is.
        status, by_predict = request(port, "POST", "/predict", {
            key: json_request[key] for key in ("instances", "parameters")})
        assert status == 200, by_predict
        status, by_raw = request(port, "POST", "/v1/models/model:predict", raw_body)
        assert status == 200, by_raw
    assert by_predict == by_raw and by_raw["predictions"][0]["labels"] in DIGITS


@pytest.mark.parametrize("argv, message", [
    (["--artifact-uri", "/local/model"], "--artifact-uri must be a gs:// directory"),
    (["--min-replicas", "0"], "--min-replicas must be >= 1, got 0"),
    (["--min-replicas", "3", "--max-replicas", "2"], "--max-replicas (2) must be >= "
                                                     "--min-replicas (3)"),
    (["--accelerator-type", "NVIDIA_TESLA_T4"], "--accelerator-type and --accelerator-count go "
                                                "together"),
    (["--accelerator-type", "NVIDIA_TESLA_T4", "--accelerator-count", "1"],
     "our default serving image is built without CUDA"),
    (["--prebuilt-image", "--container-image-uri", "i"], "not both"),
    (["--prebuilt-image", "--accelerator-type", "NOT_A_GPU", "--accelerator-count", "1"],
     "the DeployModelRequest is invalid: Failed to parse deployedModel field"),
    (["--endpoint", "my-endpoint"], "--endpoint must be an endpoint ID or projects/"),
    (["--predict-json", "{files}/body.json", "--predict-image", "{files}/a.png"],
     "give --predict-json or --predict-image, not both"),
    (["--predict-json", "{files}/a.png"], "--predict-json: {files}/a.png is not JSON"),
    (["--predict-json", "{files}/list.json"], '--predict-json: {files}/list.json must hold '
                                              '{{"instances": [...]}}'),
    (["--predict-json", "{files}/missing.json"], "--predict-json: cannot read "
                                                 "{files}/missing.json"),
    (["--predict-image", "{files}/body.json"], "--predict-image: {files}/body.json is not a PNG "
                                               "or JPEG file"),
    (["--predict-image", "{files}/huge.png"], "--predict-image: the request body is 1,600,"),
    (["--timeout-minutes", "0"], "--timeout-minutes must be positive, got 0"),
    (["--regoin", "x"], "unrecognized arguments: --regoin x"),
])
def test_bad_deployments_are_one_line_errors(capsys, files, argv, message):
    (files / "list.json").write_text("[1]")
    (files / "huge.png").write_bytes(PNG_MAGIC + bytes(1_200_000))
    argv = [arg.format(files=files) for arg in argv]
    assert deploy_model.main(["--dry-run", "--artifact-uri", "gs://b/m", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message.format(files=files) in err and "\n" not in err


def test_deploying_needs_a_project_and_the_script_runs_standalone(files):
    done = subprocess.run([sys.executable, "-m", "trainer.cloud.deploy", "--artifact-uri",
                           "gs://b/m"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --project is required to deploy (or use --dry-run)"


def test_serving_image_is_pinned_non_root_and_runs_the_server():
    text = (REPO / "trainer" / "containers" / "serving.Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    # No TensorFlow unless a build asks for it (GPUs, exports LiteRT cannot take).
    assert re.search(r"^ARG TENSORFLOW=$", text, re.M)
    assert re.search(r"pip install --no-deps /tmp/wheels/vertex_trainer-\*\.whl", text)
    assert "trainer.containers.requirements serve | python -m pip install -r /dev/stdin" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    entrypoint = re.findall(r"^ENTRYPOINT (.+)$", text, re.M)[-1]
    assert json.loads(entrypoint)[:3] == ["python", "-m", "trainer.serve"]
    copied = [line.split()[1:-1] for line in re.findall(r"^COPY .+$", text, re.M)]
    assert sum(copied, []) == ["vertex_trainer-*.whl"]  # the package, from its wheel only


class _Operation:
    def __init__(self, result):
        self._result = result

    def result(self, timeout):
        assert timeout == 45 * 60
        return self._result


def test_deploying_sends_each_request_with_the_names_the_previous_steps_created(
        monkeypatch, capsys, files, tmp_path):
    """The cloud path, against stand-in clients and the prerequisites' GETs answered by a local
    server: nothing leaves this machine."""
    from google.api import httpbody_pb2
    from google.cloud import aiplatform_v1

    location = "projects/p/locations/us-central1"
    sent = {}

    class Client:
        def __init__(self, client_options):
            assert client_options == {"api_endpoint": "us-central1-aiplatform.googleapis.com"}

        def upload_model(self, request):
            sent["upload"] = request
            return _Operation(types.UploadModelResponse(model=f"{location}/models/42"))

        def create_endpoint(self, request):
            sent["endpoint"] = request
            return _Operation(types.Endpoint(name=f"{location}/endpoints/7"))

        def deploy_model(self, request):
            sent["deploy"] = request
            return _Operation(types.DeployModelResponse(
                deployed_model=types.DeployedModel(id="99")))

        def raw_predict(self, request):
            sent["raw"] = request
            return httpbody_pb2.HttpBody(data=b'{"predictions": [{"labels": "digit-3"}]}')

    for name in ("ModelServiceClient", "EndpointServiceClient", "PredictionServiceClient"):
        monkeypatch.setattr(aiplatform_v1, name, Client)
    (tmp_path / "key.json").write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    with api({}, otherwise=(200, {"state": "ENABLED"})) as base:
        monkeypatch.setattr(checks, "authorized_session", lambda: Rebased(base))
        code = deploy_model.main(["--project", "p", "--artifact-uri", "gs://b/m",
                                  "--timeout-minutes", "45", "--predict-image",
                                  str(files / "a.png")])
    assert code == 0, capsys.readouterr().err
    assert sent["upload"].model.artifact_uri == "gs://b/m"
    assert sent["deploy"].endpoint == f"{location}/endpoints/7"
    assert sent["deploy"].deployed_model.model == f"{location}/models/42"
    assert sent["raw"].endpoint == f"{location}/endpoints/7"
    assert capsys.readouterr().out.splitlines() == [
        f"uploaded {location}/models/42", f"created {location}/endpoints/7",
        "deploying (new nodes take 10-30 minutes)...",
        f"deployed model 99 to {location}/endpoints/7",
        '{"predictions": [{"labels": "digit-3"}]}']
