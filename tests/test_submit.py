"""Offline proofs for Vertex submission: request shapes, Cloud Build, the image, the sdist."""

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import yaml
from google.cloud.aiplatform_v1.types import CustomJob, CustomJobSpec, TrainingPipeline
from google.protobuf import json_format

from trainer.cloud import submit as submit_job
from tests.conftest import REPO


def dry_run(capsys, *argv):
    assert submit_job.main(["--dry-run", *argv]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    request_text, gcloud = out.split("\n# the same through gcloud:\n")
    return json.loads(request_text), gcloud.split("\n\n# ")[0]


def pools(request):
    return request["jobSpec"]["workerPoolSpecs"]


LEGACY = ["--executor-image-uri", submit_job.PREBUILT_CPU_IMAGE]
GPU_WORKERS = ["--workers", "2", "--accelerator-type", "NVIDIA_TESLA_T4",
               "--accelerator-count", "2"]
OUT = ["--base-output-dir", "gs://b/runs/1"]
DATA = ["--train-files", "gs://b/d/train-*", "--eval-files", "gs://b/d/eval-*"]
SHAPES = {
    "single-host": ["--project", "p", "--timeout", "90m", *OUT, "--", "--model", "cnn", *DATA],
    "legacy-package": [*LEGACY, "--package-uri", "gs://b/vertex-trainer-0.1.0.tar.gz", *OUT,
                       "--", *DATA],
    "multi-worker-gpu": ["--project", "p", *GPU_WORKERS, "--spot",
                         "--restart-job-on-worker-restart", *OUT, "--", "--max-steps=5", *DATA],
    "parameter-server": ["--container-image-uri", "us-docker.pkg.dev/p/r/trainer:abc",
                         "--workers", "2", "--ps", "1", "--evaluator", "--service-account",
                         "sa@p.iam.gserviceaccount.com", *OUT, "--", *DATA],
    "reduction-server": ["--project", "p", *GPU_WORKERS, "--reduction-servers", "4", *OUT, "--",
                         *DATA],
    "tensorboard": ["--project", "p", "--tensorboard", "projects/p/locations/l/tensorboards/7",
                    "--service-account", "sa@p.iam.gserviceaccount.com", "--base-output-dir",
                    "gs://b/runs/2", "--", *DATA],
    "tpu": ["--container-image-uri", "us-docker.pkg.dev/p/r/trainer-tpu:abc", "--tpu-type",
            "TPU_V3", *OUT, "--", *DATA, "--batch-size", "1024"],
    "bundled-sample-no-project": [*OUT, "--", "--bundled-sample"],
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_dry_run_request_parses_back_unchanged_with_the_sdk_type(capsys, shape):
    request, gcloud = dry_run(capsys, *SHAPES[shape])
    job = CustomJob.from_json(json.dumps(request))  # unknown fields would raise
    assert json_format.MessageToDict(CustomJob.pb(job)) == request
    assert f"--display-name={request['displayName']} --config=custom_job.yaml" in gcloud
    spec_yaml = gcloud.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    assert yaml.safe_load(spec_yaml) == request["jobSpec"]


def test_the_gcloud_equivalent_names_the_project_the_image_is_in(capsys):
    """gcloud would otherwise create the job in its configured default project."""
    for project, argv in (("p", ["--project", "p"]), ("PROJECT", [])):
        request, gcloud = dry_run(capsys, *argv, "--region", "europe-west4", *OUT, "--", *DATA)
        assert f"/{project}/vertex-trainer/trainer:" in pools(request)[0]["containerSpec"][
            "imageUri"]
        assert gcloud.splitlines()[-1] == (
            f"gcloud ai custom-jobs create --project={project} --region=europe-west4 "
            "--display-name=vertex-trainer --config=custom_job.yaml")


def test_shapes_put_each_role_in_its_pool(capsys):
    single, _ = dry_run(capsys, *SHAPES["single-host"])
    assert len(pools(single)) == 1
    code = pools(single)[0]["containerSpec"]
    assert code == {"imageUri": "us-docker.pkg.dev/p/vertex-trainer/trainer:latest",
                    "args": ["--model", "cnn", *DATA]}
    assert single["jobSpec"]["scheduling"] == {"timeout": "5400s"}
    assert single["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": "gs://b/runs/1"}

    legacy, _ = dry_run(capsys, *SHAPES["legacy-package"])
    code = pools(legacy)[0]["pythonPackageSpec"]
    assert code["executorImageUri"] == submit_job.PREBUILT_CPU_IMAGE
    assert code["pythonModule"] == "trainer.task"

    gpu, _ = dry_run(capsys, *SHAPES["multi-worker-gpu"])
    assert [p["replicaCount"] for p in pools(gpu)] == ["1", "2"]
    assert all(p["machineSpec"]["acceleratorType"] == "NVIDIA_TESLA_T4" for p in pools(gpu))
    assert all(p["containerSpec"]["imageUri"] == "us-docker.pkg.dev/p/vertex-trainer/"
               "trainer-gpu:latest" for p in pools(gpu))
    assert gpu["jobSpec"]["scheduling"]["strategy"] == "SPOT"

    ps, _ = dry_run(capsys, *SHAPES["parameter-server"])
    assert [p["replicaCount"] for p in pools(ps)] == ["1", "2", "1", "1"]
    assert all(p["containerSpec"]["imageUri"].endswith("trainer:abc") for p in pools(ps))
    assert all("env" not in p["containerSpec"] for p in pools(ps))

    tpu, _ = dry_run(capsys, *SHAPES["tpu"])
    assert pools(tpu)[0]["machineSpec"] == {"machineType": "cloud-tpu",
                                            "acceleratorType": "TPU_V3", "acceleratorCount": 8}
    assert pools(tpu)[0]["containerSpec"]["args"][-1] == "--distribution-strategy=tpu"


def test_reduction_servers_fill_pool_2_and_tell_the_trainer(capsys):
    request, _ = dry_run(capsys, *SHAPES["reduction-server"])
    chief, workers, reducers = pools(request)
    assert reducers == {"machineSpec": {"machineType": "n1-highcpu-16"}, "replicaCount": "4",
                        "containerSpec": {"imageUri": submit_job.REDUCTION_SERVER_IMAGE}}
    for pool in (chief, workers):
        assert pool["containerSpec"]["env"] == [{"name": "VERTEX_TRAINER_REDUCTION_SERVER",
                                                 "value": "true"}]
    # What the trainer then resolves on a worker of this job, as Vertex would lay it out.
    from trainer.cluster import resolve_cluster
    from trainer.config import config_from_flags

    hosts = {f"workerpool{i}": [f"h{i}-{r}:2222" for r in range(int(p["replicaCount"]))]
             for i, p in enumerate(pools(request))}
    environ = {"CLUSTER_SPEC": json.dumps({"cluster": hosts, "task": {"type": "workerpool1",
                                                                      "index": 1}}),
               **{e["name"]: e["value"] for e in workers["containerSpec"]["env"]}}
    cluster = resolve_cluster(environ)
    assert (cluster.num_workers, cluster.num_ps, cluster.num_reduction_servers) == (2, 0, 4)
    config = config_from_flags([], environ)
    assert (config.cluster.strategy.name, config.cluster.strategy.collective) == (
        "multi_worker_mirrored", "nccl")


def test_tensorboard_names_the_instance_in_the_job_spec(capsys):
    request, _ = dry_run(capsys, *SHAPES["tensorboard"])
    assert request["jobSpec"]["tensorboard"] == "projects/p/locations/l/tensorboards/7"


def test_an_evaluator_without_workers_or_ps_keeps_pool_3(capsys):
    request, _ = dry_run(capsys, *LEGACY, "--package-uri", "gs://b/p.tar.gz", "--evaluator", *OUT,
                         "--", *DATA)
    assert [bool(p) for p in pools(request)] == [True, False, False, True]


def test_staging_bucket_builds_the_sdist_and_names_its_upload(capsys, monkeypatch):
    monkeypatch.setattr(submit_job.images, "checkout", lambda: REPO)  # run from the checkout
    request, _ = dry_run(capsys, *LEGACY, "--staging-bucket", "gs://bucket", *OUT, "--", *DATA)
    assert pools(request)[0]["pythonPackageSpec"]["packageUris"] == [
        "gs://bucket/packages/vertex-trainer-0.1.0.tar.gz"]


@pytest.mark.parametrize("today, warned", [("2026-07-11", False), ("2026-07-12", True)])
def test_a_prebuilt_image_past_its_end_of_availability_warns_once(capsys, monkeypatch, today,
                                                                  warned):
    monkeypatch.setattr(submit_job, "date", type("FixedDate", (submit_job.date,), {
        "today": classmethod(lambda cls: submit_job.date.fromisoformat(today))}))
    assert submit_job.main(["--dry-run", *SHAPES["legacy-package"]]) == 0
    err = capsys.readouterr().err
    warning = (f"warning: {submit_job.PREBUILT_CPU_IMAGE} reached its end of availability on "
               "2026-07-11 and Vertex may refuse it; run our image instead (--build cloud, or "
               "--container-image-uri)\n")
    assert err == (warning if warned else "")


def test_build_pushes_our_image_tagged_with_the_commit_then_runs_it(capsys, monkeypatch):
    monkeypatch.setattr(submit_job.images, "checkout", lambda: REPO)  # run from the checkout
    monkeypatch.setattr(submit_job, "source_tag", lambda: "abc1234")
    assert submit_job.main(["--dry-run", "--project", "p", "--build", "local", *OUT, "--",
                            *DATA]) == 0
    out = capsys.readouterr().out
    request = json.loads(out.split("\n# the same through gcloud:\n")[0])
    assert pools(request)[0]["containerSpec"]["imageUri"] == (
        "us-docker.pkg.dev/p/vertex-trainer/trainer:abc1234")
    context = f"{tempfile.gettempdir()}/vertex-trainer-context-abc1234"
    builds = out.split("\n# --build first runs:\n")[1].split("\n\n# ")[0]
    assert builds == (
        f"{sys.executable} -m trainer.containers.images {context}\n"
        f"docker build --network host -f {context}/training.Dockerfile -t "
        "us-docker.pkg.dev/p/vertex-trainer/trainer:abc1234 "
        f"{context}\ndocker push us-docker.pkg.dev/p/vertex-trainer/trainer:abc1234")
    assert "docker allowed to push to us-docker.pkg.dev: gcloud auth configure-docker " \
        "us-docker.pkg.dev" in out
    assert submit_job.main(["--dry-run", "--project", "p", "--build", "cloud", *OUT, "--",
                            *DATA]) == 0
    assert f"gcloud builds submit --project=p --config={REPO}/cloudbuild.yaml " \
        f"--substitutions=SHORT_SHA=abc1234 {REPO}" in capsys.readouterr().out


def test_cloud_build_from_an_installed_package_builds_over_a_generated_config(
        capsys, monkeypatch, tmp_path):
    """No checkout, no cloudbuild.yaml: the context gets a minimal config that builds and
    pushes the image, and `gcloud builds submit` uploads the context."""
    monkeypatch.setattr(submit_job.images, "checkout", lambda: None)
    monkeypatch.setattr(submit_job, "source_tag", lambda: "dev-1")
    assert submit_job.main(["--dry-run", "--project", "p", "--build", "cloud", *OUT, "--",
                            *DATA]) == 0
    builds = capsys.readouterr().out.split("\n# --build first runs:\n")[1].split("\n\n# ")[0]
    make_context, gcloud = [line.split() for line in builds.splitlines()]
    image = "us-docker.pkg.dev/p/vertex-trainer/trainer:dev-1"
    context = f"{tempfile.gettempdir()}/vertex-trainer-context-dev-1"
    assert make_context == [sys.executable, "-m", "trainer.containers.images", context,
                            f"--cloud-build=training={image}"]
    assert gcloud == ["gcloud", "builds", "submit", "--project=p",
                      f"--config={context}/cloudbuild.generated.yaml", context]
    # What that first command writes, here into a scratch directory.
    from trainer.containers import images

    made = tmp_path / "context"
    assert images.main([str(made), f"--cloud-build=training={image}",
                        "--cloud-build=serving=us-docker.pkg.dev/p/vertex-trainer/serving:dev-1",
                        "--build-arg=TENSORFLOW=tensorflow-cpu==2.21.0"]) == 0
    config = yaml.safe_load((made / images.CLOUD_BUILD_FILE).read_text())
    assert [step["args"] for step in config["steps"]] == [
        ["build", "-f", "training.Dockerfile", "--build-arg", "TENSORFLOW=tensorflow-cpu==2.21.0",
         "-t", image, "."],
        ["build", "-f", "serving.Dockerfile", "-t",
         "us-docker.pkg.dev/p/vertex-trainer/serving:dev-1", "."]]
    assert set(config["images"]) == {image, "us-docker.pkg.dev/p/vertex-trainer/serving:dev-1"}
    assert {p.name for p in made.iterdir()} >= {"training.Dockerfile", "serving.Dockerfile",
                                                 images.CLOUD_BUILD_FILE}
    assert len(list(made.glob("vertex_trainer-*.whl"))) == 1


@pytest.mark.parametrize("argv, message", [
    (["--package-uri", "gs://b/p"], "name it with --executor-image-uri"),
    ([*LEGACY], "--executor-image-uri runs our sdist: give --staging-bucket or --package-uri"),
    ([*LEGACY, "--package-uri", "gs://b/p", "--container-image-uri", "i"], "not both"),
    ([*LEGACY, "--package-uri", "gs://b/p", "--tpu-type", "TPU_V3"],
     "needs --container-image-uri"),
    (["--container-image-uri", "i", "--build", "cloud"], "drop --container-image-uri"),
    (["--container-image-uri", "i", "--ps", "1"], "--ps needs --workers"),
    (["--container-image-uri", "i", "--accelerator-type", "NVIDIA_TESLA_T4"], "go together"),
    (["--container-image-uri", "i", "--base-output-dir", "/tmp/x"], "must be a gs:// path"),
    ([*LEGACY, "--package-uri", "/local/p.tar.gz"], "--package-uri must be a gs:// path"),
    (["--container-image-uri", "i", "--timeout", "soon"], "--timeout must be like 30m"),
    (["--container-image-uri", "i", "--accelerator-type", "NOT_A_GPU", "--accelerator-count",
      "1"], "the CustomJob is invalid"),
    (["--container-image-uri", "i", "--reduction-servers", "2"], "needs GPU workers"),
    (["--container-image-uri", "i", "--workers", "2", "--reduction-servers", "2"],
     "needs GPU workers"),
    (["--container-image-uri", "i", *GPU_WORKERS, "--ps", "1", "--reduction-servers", "2"],
     "and no --ps"),
    (["--container-image-uri", "i", "--reduction-servers", "-1"], "--reduction-servers must be"),
    (["--container-image-uri", "i", "--tensorboard", "projects/p/locations/l/tensorboards/7",
      "--base-output-dir", "gs://b/r"], "--tensorboard needs --service-account"),
    (["--container-image-uri", "i", "--tensorboard", "tb-7"], "--tensorboard must be projects/"),
    (["--dataset", "my-photos"], "--dataset must be a dataset ID or projects/P/locations/R/"),
    (["--dataset", "projects/p/locations/europe-west4/datasets/5"],
     "is in europe-west4, the job in --region us-central1"),
])
def test_bad_submissions_are_one_line_errors(capsys, argv, message):
    output = [] if "--base-output-dir" in argv else OUT
    assert submit_job.main(["--dry-run", *argv, *output, "--", *DATA]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("argv, trainer, message", [
    # A misspelt trainer flag: the trainer's own parser, before anything is spent.
    (OUT, ["--train-file", "gs://b/d/train-*", "--eval-files", "gs://b/d/eval-*"],
     "error: trainer flags after --: unrecognized arguments: --train-file gs://b/d/train-* "
     "(see vertex-trainer train --help)"),
    (OUT, ["--max-steps", "ten", *DATA], "error: trainer flags after --: argument --max-steps"),
    # Paths of this machine, which the job cannot read.
    (OUT, ["--train-files", "/tmp/mnist/train-*", "--eval-files", "gs://b/d/eval-*"],
     "error: trainer flags after --: --train-files /tmp/mnist/train-* is a path on this "
     "machine, which a Vertex job cannot read"),
    (OUT, [*DATA, "--label-map", "labels.txt"], "--label-map labels.txt is a path on this"),
    (OUT, [*DATA, "--job-dir", "/tmp/job"], "--job-dir /tmp/job is a path on this machine"),
    # No home for the export.
    ([], DATA, "error: --base-output-dir is missing: without it (or a gs:// --job-dir) the "
               "checkpoints and the export stay on the job's machines"),
    (["--tensorboard", "projects/p/locations/l/tensorboards/7", "--service-account", "s"], DATA,
     "error: --base-output-dir is missing"),
    (["--dataset", "123"], ["--job-dir", "gs://b/job"],
     "error: --dataset needs --base-output-dir: Vertex exports the dataset's splits under it"),
    # No data: the trainer would refuse the bundled sample inside the job.
    (OUT, ["--max-steps", "10"], "error: the job has no data: give --train-files"),
])
def test_what_the_job_would_fail_on_or_lose_is_refused_first(capsys, argv, trainer, message):
    assert submit_job.main(["--dry-run", *argv, "--", *trainer]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_gs_job_dir_keeps_the_export_without_a_base_output_dir(capsys):
    request, _ = dry_run(capsys, "--", *DATA, "--job-dir", "gs://b/job")
    assert "baseOutputDirectory" not in request["jobSpec"]


def test_a_dry_run_without_project_names_a_placeholder_and_lists_the_prerequisites(capsys):
    assert submit_job.main(["--dry-run", "--build", "cloud", "--tensorboard",
                            "projects/p/locations/l/tensorboards/7", "--service-account",
                            "sa@p.iam.gserviceaccount.com", *OUT, "--", *DATA]) == 0
    out = capsys.readouterr().out
    request = json.loads(out.split("\n# the same through gcloud:\n")[0])
    assert pools(request)[0]["containerSpec"]["imageUri"].startswith(
        "us-docker.pkg.dev/PROJECT/vertex-trainer/trainer:")
    listed = out.split("# prerequisites (each with the command that creates it):\n")[1]
    lines = listed.strip().splitlines()
    assert all(line.startswith("- ") for line in lines)
    for expected in (
            "gcloud auth application-default login",
            "gcloud services enable aiplatform.googleapis.com --project=PROJECT",
            "gcloud services enable cloudbuild.googleapis.com --project=PROJECT",
            "gcloud artifacts repositories create vertex-trainer --repository-format=docker "
            "--location=us --project=PROJECT",
            "gcloud storage buckets create gs://b --project=PROJECT",
            "--member=serviceAccount:sa@p.iam.gserviceaccount.com --role=roles/aiplatform.user"):
        assert any(expected in line for line in lines), (expected, lines)


def test_a_managed_dataset_makes_a_training_pipeline_that_names_it(capsys):
    assert submit_job.main(["--dry-run", "--project", "p", "--dataset",
                            "projects/p/locations/us-central1/datasets/123", *OUT, "--",
                            "--max-steps", "100"]) == 0
    out = capsys.readouterr().out
    assert "# the same through gcloud" not in out  # gcloud creates custom jobs only
    pipeline = json.loads(out.split("\n\n# ")[0])
    message = TrainingPipeline.from_json(json.dumps(pipeline))
    assert message.input_data_config.dataset_id == "123"
    assert message.input_data_config.gcs_destination.output_uri_prefix == "gs://b/runs/1"
    assert message.input_data_config.annotation_schema_uri.endswith(
        "/annotation/image_classification_1.0.0.yaml")
    assert message.training_task_definition.endswith("/custom_task_1.0.0.yaml")
    # The task inputs are the job spec a CustomJob would carry.
    spec = CustomJobSpec.from_json(json.dumps(pipeline["trainingTaskInputs"]))
    assert spec.worker_pool_specs[0].container_spec.args == ["--max-steps", "100"]
    assert spec.base_output_directory.output_uri_prefix == "gs://b/runs/1"


def test_submitting_needs_a_project(capsys):
    assert submit_job.main(["--container-image-uri", "i", *OUT, "--", *DATA]) == 2
    assert "--project is required" in capsys.readouterr().err


def test_cloudbuild_structure():
    config = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    steps = config["steps"]
    ids = [step["id"] for step in steps]
    assert len(ids) == len(set(ids))
    for index, step in enumerate(steps):
        for dependency in step.get("waitFor", []):
            assert dependency == "-" or dependency in ids[:index], (step["id"], dependency)
    text = (REPO / "cloudbuild.yaml").read_text()
    used = set(re.findall(r"\$\{?(_[A-Z0-9_]+)", text))
    assert used <= set(config["substitutions"]), used - set(config["substitutions"])
    by_id = {step["id"]: step for step in steps}
    built = {args[i + 1] for step in steps if step["id"].startswith("build-")
             for args in [step["args"]] for i, arg in enumerate(args) if arg == "-t"}
    assert set(config["images"]) <= built
    assert by_id["push-image"]["args"][-1] == "${_IMAGE}" and "--all-tags" in by_id["push-image"]["args"]
    assert {"test", "build-image"} <= set(by_id["push-image"]["waitFor"])
    # Both images are built from the context and pushed, each after the tests pass.
    for kind, dockerfile in (("", "training.Dockerfile"), ("SERVING_", "serving.Dockerfile")):
        build = by_id[f"build-{kind.lower().replace('_', '-')}image"]["args"]
        assert f"${{_{kind}IMAGE}}:${{SHORT_SHA}}" in build and build[-1] == "context"
        assert build[build.index("-f") + 1] == f"context/{dockerfile}"
        push = by_id[f"push-{kind.lower().replace('_', '-')}image"]
        assert push["args"][-1] == f"${{_{kind}IMAGE}}" and "test" in push["waitFor"]
    gpu = by_id["gpu-image"]
    assert '"${_BUILD_GPU}" != "true"' in gpu["args"][-1] and "test" in gpu["waitFor"]
    # The two share no TensorFlow layer (the serving image has none): built side by side.
    assert by_id["build-serving-image"]["waitFor"] == by_id["build-image"]["waitFor"] == [
        "context"]
    assert by_id["test"]["waitFor"] == by_id["context"]["waitFor"] == ["-"]  # in parallel
    submit = " ".join(by_id["submit-job"]["args"])
    assert "--container-image-uri=${_IMAGE}:${SHORT_SHA}" in submit
    assert by_id["submit-job"]["waitFor"] == ["push-image"]


def test_dockerfile_is_pinned_unprivileged_and_runs_the_trainer():
    dockerfile = REPO / "trainer" / "containers" / "training.Dockerfile"
    lines = [l.strip() for l in dockerfile.read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    base = next(l for l in lines if l.startswith("ARG BASE_IMAGE=")).split("=", 1)[1]
    assert re.search(r":\d+\.\d+\.\d+", base) and "latest" not in base
    assert "tensorflow" in next(l for l in lines if l.startswith("ARG TENSORFLOW="))
    user = [l for l in lines if l.startswith("USER ")][-1]
    assert user.split()[1] not in ("root", "0")
    assert lines[-1] == 'ENTRYPOINT ["python", "-m", "trainer.task"]'
    copied = [l.split()[1:-1] for l in lines if l.startswith("COPY ")]
    assert sum(copied, []) == ["vertex_trainer-*.whl"]  # the package, from its wheel only


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(out)], cwd=REPO,
                   check=True, capture_output=True)
    return next(out.glob("vertex-trainer-*.tar.gz"))


def test_sdist_holds_the_trainer_the_sample_and_the_configs(sdist):
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"setup.py", "README.md", "trainer/task.py", "trainer/loop.py"} <= names
    assert {"trainer/sample/train-00000-of-00002.tfrecord.gz",
            "trainer/sample/eval-00000-of-00001.tfrecord.gz"} <= names
    assert any(n.startswith("hptuning/") and n.endswith(".yaml") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_sdist_installs_on_an_existing_tensorflow_without_replacing_it(sdist, tmp_path):
    # A fresh venv that sees the running interpreter's packages, TensorFlow included (as the
    # 2.17 image has its own), with no index: the install must be satisfied by what is there,
    # never pull another TensorFlow. A .pth file, not --system-site-packages: when the suite
    # runs in a virtualenv, the "system" would be the base Python, without TensorFlow.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                            "['purelib'])"], capture_output=True, text=True, check=True)
    outer = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(inner.stdout.strip()) / "outer.pth").write_text("\n".join(outer) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-build-isolation",
                              str(sdist)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert "tensorflow" not in install.stdout.lower().split("successfully installed")[-1]
    # Without PYTHONPATH, which may name the checkout (and would win over the venv).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import trainer; print(trainer.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert str(venv) in where.stdout
    help_ = subprocess.run([str(python), "-m", "trainer.task", "--help"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert help_.returncode == 0 and "--train-files" in help_.stdout


def test_requirements_admit_tensorflow_2_17():
    from packaging.requirements import Requirement

    setup_text = (REPO / "setup.py").read_text()
    tensorflow = Requirement(re.search(r'"(tensorflow[^"]*)"', setup_text)[1])
    assert "2.17.0" in tensorflow.specifier and "2.21.0" in tensorflow.specifier
