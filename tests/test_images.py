"""Both images built from this checkout and run for real: training, serving, a container cluster.

Needs a Docker daemon: one already running is used as it is; otherwise the tests start
`dockerd --bridge=none --iptables=false` themselves (root) and stop it by its PID at the end.
The base is built from Debian's mirror by trainer/containers/base_image.py (no Docker Hub) and kept under a
content tag, so only the first run pays for it. Set VT_TEST_GPU_IMAGE=1 to also build the GPU
image (several GB of CUDA wheels).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.containers.base_image import BuildError, ensure_base_image, run_step
from trainer.containers.images import build_command, build_context
from trainer.tools.local_cluster import free_ports
from tests.conftest import REPO
from tests.exports import current_example, images, png, scaled
from tests.serving import request
from tests.test_serve_requests import CORPUS, EXPECTED

pytestmark = pytest.mark.images

# Helpers sharing a Docker daemon can keep their test images apart with VT_TEST_IMAGE_TAG.
TAG = os.environ.get("VT_TEST_IMAGE_TAG", "test")
TRAINING_IMAGE = f"vertex-trainer/trainer:{TAG}"
SERVING_IMAGE = f"vertex-trainer/serving:{TAG}"
GPU_IMAGE = f"vertex-trainer/trainer-gpu:{TAG}"
CONTAINER_UID = 1000  # the `trainer`/`serve` user both Dockerfiles create
SIGNATURES = ["encoded_image", "serving_default", "tf_example"]


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def _wait_for(condition, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture(scope="session")
def docker(tmp_path_factory):
    """A Docker daemon that answers; started here (and stopped by PID) when none runs."""
    if not shutil.which("docker"):
        pytest.skip("no docker client (apt-get install docker.io)")
    if _docker_answers():
        yield
        return
    if not shutil.which("dockerd"):
        pytest.skip("no Docker daemon running and no dockerd to start (apt-get install docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no Docker daemon running, and starting dockerd needs root")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false"], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        if not _wait_for(lambda: daemon.poll() is not None or _docker_answers(), 90):
            pytest.skip("dockerd started but did not answer within 90 s")
        if daemon.poll() is not None:
            last = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            pytest.skip(f"dockerd cannot run on this machine: {last[0][:200]}")
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


@pytest.fixture(scope="session")
def context(tmp_path_factory) -> Path:
    """The build context every image is built from: this checkout's wheel and the Dockerfiles."""
    return build_context(tmp_path_factory.mktemp("context"))


def build(step: str, kind: str, image: str, context: Path, base: str, **build_args: str) -> str:
    """`docker build` of one of our images; a failure fails the test naming the step and log."""
    try:
        run_step(step, build_command(kind, image, context, {"BASE_IMAGE": base, **build_args}))
    except BuildError as err:
        pytest.fail(str(err), pytrace=False)
    return image


def test_a_failing_step_is_named_with_the_tail_of_its_log():
    with pytest.raises(BuildError) as info:
        run_step("build of the training image", ["sh", "-c", "seq 100; echo 'E: broken' >&2; "
                                                  "exit 3"], log_lines=5)
    message = str(info.value)
    assert message.startswith("build of the training image failed (exit 3): sh -c")
    assert message.splitlines()[1:] == ["97", "98", "99", "100", "E: broken"]


def docker_run(step: str, *args: str, timeout: float = 300) -> str:
    """`docker run --rm ARGS`; output on success, else fails naming the step with the log's tail."""
    try:
        return run_step(step, ["docker", "run", "--rm", *args], timeout=timeout)
    except BuildError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def base_image(docker):
    try:
        return ensure_base_image(log=lambda line: print(line, file=sys.stderr))
    except BuildError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def training_image(base_image, context):
    return build("build of the training image", "training", TRAINING_IMAGE, context, base_image)


@pytest.fixture(scope="session")
def serving_image(base_image, context):
    return build("build of the serving image", "serving", SERVING_IMAGE, context, base_image)


def writable_job_dir(path: Path) -> Path:
    """A host directory the image's uid 1000 can write: handed to that uid (we are root)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, CONTAINER_UID, CONTAINER_UID)
    return path


def train(image: str, job_dir: Path, *flags: str) -> str:
    return docker_run("run of the training image", "--network", "none", "--volume",
                      f"{job_dir}:/job", image, "--job-dir", "/job", "--model", "dnn",
                      "--batch-size", "50", "--log-every-steps", "10", "--eval-steps", "2", *flags)


@pytest.fixture(scope="module")
def trained(training_image, tmp_path_factory):
    """(job dir, log) of a 20-step training run on the bundled sample, in the container."""
    job_dir = writable_job_dir(tmp_path_factory.mktemp("images") / "job")
    return job_dir, train(training_image, job_dir, "--max-steps", "20", "--eval-every-steps",
                          "20")


def test_training_image_runs_unprivileged_offline_and_lean(training_image):
    help_text = docker_run("run of the training image", "--network", "none", training_image,
                           "--help")
    assert "--max-steps" in help_text and "--job-dir" in help_text
    assert docker_run("run of the training image", "--network", "none", "--entrypoint", "id",
                      training_image, "-u").strip() == str(CONTAINER_UID)
    # As root, to see every home: what a lean image must not carry.
    leftovers = docker_run(
        "run of the training image", "--network", "none", "--user", "0", "--entrypoint", "sh",
        training_image, "-c", "ls -d /root/.cache/pip /home/*/.cache/pip 2>/dev/null; "
                              "command -v gcc cc g++ make; "
                              "find /opt /var/lib/apt/lists /var/cache/apt -mindepth 1 -type f")
    assert leftovers == "", leftovers


def test_training_writes_checkpoints_logs_and_export_to_the_mount_and_resumes(training_image,
                                                                               trained):
    job_dir, log = trained
    assert re.search(r"done at step 20\b", log), log[-2000:]
    assert (job_dir / "checkpoints" / "checkpoint").exists()
    assert list((job_dir / "logs").rglob("events.out.tfevents.*"))
    (export,) = (job_dir / "export").iterdir()
    assert (export / "saved_model.pb").exists()
    assert all(p.stat().st_uid == CONTAINER_UID for p in job_dir.rglob("*"))
    # The image has no matplotlib: the run's results are there as CSV, and the log says why.
    assert sorted(p.name for p in (job_dir / "results").iterdir()) == [
        "eval_classes.csv", "eval_confusion_matrix.csv", "history.csv"]
    assert "matplotlib is not installed: results as CSV only" in log

    resumed = train(training_image, job_dir, "--max-steps", "30", "--eval-every-steps", "10")
    assert re.search(r"resumed from checkpoint \S+ at step 20\b", resumed), resumed[-2000:]
    assert re.search(r"done at step 30\b", resumed), resumed[-2000:]


@contextlib.contextmanager
def serving_container(image: str, model_dir: Path):
    """The serving image on a free 127.0.0.1 port (host network); yields (port, container name);
    always removes the container, showing its log if it never became healthy."""
    (port,) = free_ports(1)
    name = f"vt-serving-test-{os.getpid()}"
    started = subprocess.run(
        ["docker", "run", "--detach", "--rm", "--name", name, "--network", "host",
         "--volume", f"{model_dir}:/model:ro", "-e", f"AIP_HTTP_PORT={port}",
         "-e", "AIP_STORAGE_URI=/model", image, "--host", "127.0.0.1"],
        capture_output=True, text=True)
    assert started.returncode == 0, f"run of the serving image failed: {started.stderr[-2000:]}"
    try:
        def healthy():
            with contextlib.suppress(OSError, ValueError):
                return request(port, "GET", "/health", timeout=5)[0] == 200
            return False

        def running():
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                                   capture_output=True, text=True)
            return state.stdout.strip() == "true"

        _wait_for(lambda: healthy() or not running(), 120)
        if not healthy():
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            pytest.fail(f"run of the serving image: not healthy on 127.0.0.1:{port}\n"
                        f"{(logs.stdout + logs.stderr)[-2000:]}", pytrace=False)
        yield port, name
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def served_export(training_image, trained) -> Path:
    """The trained export with its LiteRT conversion stored in it, made by the training image
    (the serving image has no TensorFlow to convert)."""
    (export,) = sorted((trained[0] / "export").iterdir())[:1]
    docker_run("conversion in the training image", "--network", "none", "--volume",
               f"{export}:/model", "--entrypoint", "python", training_image, "-m",
               "trainer.serving.litert", "/model")
    assert (export / "litert" / "model.tflite").is_file()
    return export


def test_serving_image_is_slim_and_has_no_tensorflow(serving_image):
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", serving_image],
                              capture_output=True, text=True).stdout)
    assert size <= 600 * 2**20, f"the serving image is {size / 2**20:.0f} MiB"
    found = docker_run("run of the serving image", "--network", "none", "--entrypoint", "python",
                       serving_image, "-c", "import importlib.util as u; "
                       "print(u.find_spec('tensorflow') is None, u.find_spec('ai_edge_litert') "
                       "is not None)")
    assert found.split() == ["True", "True"]


def test_serving_image_answers_every_signature_from_the_mounted_export(serving_image,
                                                                       served_export):
    pixels = images(1)
    bodies = {
        "serving_default": {"instances": scaled(pixels).tolist()},
        "encoded_image": {"signature_name": "encoded_image",
                          "instances": [{"image_bytes": b64(png(pixels[0]))}]},
        "tf_example": {"signature_name": "tf_example",
                       "instances": [b64(current_example(pixels[0]))]},
    }
    with serving_container(serving_image, served_export) as (port, name):
        status, health = request(port, "GET", "/health")
        assert status == 200 and health["signatures"] == SIGNATURES
        answers = {}
        for signature, body in bodies.items():
            status, response = request(port, "POST", "/predict", body)
            assert status == 200, (signature, response)
            (prediction,) = response["predictions"]
            assert len(prediction["probabilities"]) == 10
            answers[signature] = prediction["classes"]
        assert len(set(answers.values())) == 1, answers  # one image, one answer, any signature
        status, response = request(port, "POST", "/predict",
                                   {"instances": scaled(pixels).tolist(), "signature_name": "nope"})
        assert status == 400 and "unknown signature_name 'nope'" in response["error"]
        for corpus in ("wide-png-1x990000", "booleans-utf-16"):
            status, response = request(port, "POST", "/predict",
                                       (CORPUS / f"{corpus}.body").read_bytes())
            assert status == 400 and EXPECTED[corpus] in response["error"], response
        log = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        assert re.search(r"with LiteRT .* ready \d+\.\d+ s after start", log), log


def test_serving_image_refuses_an_export_it_cannot_run_in_one_line(serving_image, trained,
                                                                   tmp_path):
    (export,) = sorted((trained[0] / "export").iterdir())[:1]
    bare = tmp_path / "bare"
    shutil.copytree(export, bare, ignore=shutil.ignore_patterns("litert"))
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "--volume",
                           f"{bare}:/model:ro", "-e", "AIP_STORAGE_URI=/model", serving_image],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --runtime auto: LiteRT cannot serve it: /model holds no "
                           "litert/model.tflite made from its SavedModel; this installation has "
                           "no TensorFlow to convert it"), last


def test_the_sdk_local_endpoint_serves_from_the_image(serving_image, served_export,
                                                      monkeypatch):
    """google-cloud-aiplatform's LocalModel / LocalEndpoint (what `launch --local` drives): it
    mounts the export, polls health and posts predictions. Host network: no bridge here."""
    import docker.models.containers
    from google.cloud.aiplatform.prediction import LocalModel

    run = docker.models.containers.ContainerCollection.run

    def on_host_network(self, *args, **kwargs):
        kwargs.pop("ports", None)
        return run(self, *args, **{**kwargs, "network_mode": "host"})

    (port,) = free_ports(1)
    local_model = LocalModel(serving_container_image_uri=serving_image,
                             serving_container_ports=[port],
                             serving_container_args=["--host", "127.0.0.1"])
    monkeypatch.setattr(docker.models.containers.ContainerCollection, "run", on_host_network)
    with local_model.deploy_to_local_endpoint(artifact_uri=str(served_export),
                                              host_port=str(port)) as endpoint:
        assert endpoint.run_health_check().status_code == 200
        body = {"instances": [{"image_bytes": b64(png(images(1)[0]))}],
                "parameters": {"signature_name": "encoded_image"}}
        answer = endpoint.predict(request=json.dumps(body),
                                  headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"][0]["probabilities"]) == 10
        bad = endpoint.predict(request="{bad", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]


def test_local_cluster_of_containers_trains_in_sync(training_image, tmp_path):
    job_dir = writable_job_dir(tmp_path / "job")
    result = subprocess.run(
        [sys.executable, "-m", "trainer.tools.local_cluster", "--image", training_image, "--workers", "1",
         "--volume", f"{job_dir}:/job", "--timeout", "300", "--", "--job-dir", "/job",
         "--model", "dnn", "--batch-size", "50", "--max-steps", "20", "--eval-every-steps", "20",
         "--eval-steps", "2", "--log-every-steps", "10"],
        cwd=REPO, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, ("run of the container cluster failed:\n"
                                    + result.stdout[-3000:])
    done = {task: re.search(r"\[%s\] .*done at step 20.*weights (\w+)" % task, result.stdout)
            for task in ("chief-0", "worker-0")}
    assert all(done.values()), result.stdout[-3000:]
    assert done["chief-0"][1] == done["worker-0"][1]
    assert "strategy multi_worker_mirrored: 2 replica" in result.stdout
    assert len(list((job_dir / "export").iterdir())) == 1


@pytest.mark.skipif(os.environ.get("VT_TEST_GPU_IMAGE") != "1",
                    reason="set VT_TEST_GPU_IMAGE=1 to build the GPU image (GBs of CUDA wheels)")
def test_gpu_image_imports_tensorflow_and_finds_its_cuda_libraries(base_image, context):
    image = build("build of the GPU training image (tensorflow[and-cuda])", "training", GPU_IMAGE,
                  context, base_image, TENSORFLOW="tensorflow[and-cuda]==2.21.0")
    report = docker_run(
        "run of the GPU training image", "--network", "none", "--entrypoint", "python", image,
        "-c", "import glob, os, tensorflow as tf; info = tf.sysconfig.get_build_info(); "
              "print('cuda', info['cuda_version'], 'cudnn', info['cudnn_version']); "
              "root = os.path.dirname(os.path.dirname(tf.__file__)); "
              "[print('lib', os.path.basename(p)) for p in sorted(glob.glob(root + "
              "'/nvidia/*/lib/lib*.so*'))]; print('gpus', len(tf.config.list_physical_devices("
              "'GPU')))")
    print(report)
    libraries = re.findall(r"^lib (\S+)", report, re.M)
    for wanted in ("libcudart", "libcublas", "libcudnn", "libnccl"):
        assert any(name.startswith(wanted) for name in libraries), (wanted, report)
    assert re.search(r"^cuda \d+", report, re.M), report
