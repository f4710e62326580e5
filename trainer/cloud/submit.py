"""Submit the trainer to Vertex AI as a custom job, or print that request offline (--dry-run).

    vertex-trainer submit --project P --region us-central1 --build cloud \
        --workers 2 --accelerator-type NVIDIA_TESLA_T4 --base-output-dir gs://B/runs/1 \
        -- --train-files 'gs://B/mnist/train-*' --eval-files 'gs://B/mnist/eval-*'

Runs our training image: --container-image-uri, else the one cloudbuild.yaml pushes to the
project's Artifact Registry (trainer, or trainer-gpu with --accelerator-type); --build local|cloud
builds and pushes it first (docker, or Cloud Build). The legacy path, our sdist on a Vertex
prebuilt image, needs an explicit --executor-image-uri and warns once that image is past its
end of availability. Worker pools follow Vertex: 0 chief, 1 workers, 2 parameter servers or
Reduction Server (--reduction-servers), 3 evaluator. With --dataset (a Vertex managed dataset)
the job is a TrainingPipeline whose inputDataConfig names the dataset: only then does Vertex
export its splits and hand them to the trainer as AIP_DATA_FORMAT and AIP_*_DATA_URI.

Before anything is sent or built (trainer.cloud.checks): the trainer flags after `--` parse with
the trainer's own parser, no flag names a path of this machine, the export has a gs:// home
(--base-output-dir), the job has data; the request parses with the aiplatform SDK's own type;
a real run then checks the prerequisites (credentials, APIs, the image repository, buckets).
The dry-run prints exactly what would be sent, the equivalent `gcloud ai custom-jobs create`,
the build commands and the prerequisites, with or without --project and credentials.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


from trainer.cloud import checks, plans
from trainer.cloud.prebuilt import TRAINING_CPU as PREBUILT_CPU_IMAGE
from trainer.cloud.prebuilt import end_of_availability, past_end_warning
from trainer.cli import (OneLineParser, add_dry_run, add_location, run_cli,
                         parse_command, usage_errors)
from trainer.cluster import REDUCTION_SERVER_ENV
from trainer.containers import images
from trainer.containers.daemon import require_docker
from trainer.errors import TrainerError

# Where cloudbuild.yaml pushes our images (its _IMAGE / _SERVING_IMAGE / _GPU_IMAGE).
OUR_IMAGE = "us-docker.pkg.dev/{project}/vertex-trainer/trainer"
OUR_GPU_IMAGE = "us-docker.pkg.dev/{project}/vertex-trainer/trainer-gpu"
OUR_SERVING_IMAGE = "us-docker.pkg.dev/{project}/vertex-trainer/serving"
REDUCTION_SERVER_IMAGE = "us-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
DEFAULT_MACHINE = "n1-standard-4"
GPU_TENSORFLOW = "tensorflow[and-cuda]==2.21.0"
_TENSORBOARD = re.compile(r"^projects/[^/]+/locations/[^/]+/tensorboards/\d+$")
_DATASET = re.compile(r"^(?:projects/([^/]+)/locations/([^/]+)/datasets/)?(\d+)$")
_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> str:
    """'90m' -> '5400s' (protobuf Duration JSON)."""
    found = _DURATION.match(text.strip())
    if not found or int(found[1]) == 0:
        raise TrainerError(f"--timeout must be like 30m, 2h or 1d, got {text!r}")
    return f"{int(found[1]) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}[found[2]]}s"


def default_image(project: str | None, gpu: bool) -> str:
    """Our training image in the project's Artifact Registry (a placeholder project in a
    dry-run without --project)."""
    return (OUR_GPU_IMAGE if gpu else OUR_IMAGE).format(
        project=project or plans.PROJECT_PLACEHOLDER) + ":latest"


def dataset_id(text: str, project: str | None, region: str) -> str:
    """The managed dataset's ID from an ID or its resource name (which must be in --region)."""
    found = _DATASET.match(text.strip())
    if not found:
        raise TrainerError(f"--dataset must be a dataset ID or projects/P/locations/R/datasets/"
                           f"ID, got {text!r}")
    if found[2] and found[2] != region:
        raise TrainerError(f"--dataset {text} is in {found[2]}, the job in --region {region}: "
                           "a training pipeline reads datasets of its own region")
    if found[1] and project and found[1] != project:
        raise TrainerError(f"--dataset {text} belongs to project {found[1]}, not --project "
                           f"{project}")
    return found[3]


def _pool(machine_type: str, replicas: int, code: dict, accelerator: tuple | None = None) -> dict:
    machine = {"machineType": machine_type}
    if accelerator:
        machine["acceleratorType"], machine["acceleratorCount"] = accelerator
    # replicaCount is an int64: its canonical JSON form is a string.
    return {"machineSpec": machine, "replicaCount": str(replicas), **code}


def check_job(args: argparse.Namespace, trainer_args: list[str]) -> None:
    """What a job would fail on or lose, found before anything is spent (trainer.cloud.checks)."""
    flags = checks.trainer_flags(trainer_args)
    checks.require_cloud_paths(flags)
    if args.dataset and not args.base_output_dir:
        raise TrainerError("--dataset needs --base-output-dir: Vertex exports the dataset's "
                           "splits under it for the job")
    checks.require_output(args.base_output_dir, flags)
    checks.require_data(flags, managed_dataset=bool(args.dataset))


def build_request(args: argparse.Namespace, trainer_args: list[str],
                  package_uri: str | None) -> plans.Request:
    """The CustomJob request, or with --dataset the TrainingPipeline (REST/JSON shape) for the
    parsed flags; pure, no network."""
    if args.tpu_type and (args.workers or args.ps or args.accelerator_type):
        raise TrainerError("--tpu-type runs one TPU VM: it cannot be combined with --workers, "
                           "--ps or --accelerator-type")
    if args.ps and not args.workers:
        raise TrainerError("--ps needs --workers: parameter servers serve workers")
    if bool(args.accelerator_type) != bool(args.accelerator_count):
        raise TrainerError("--accelerator-type and --accelerator-count go together")
    if args.reduction_servers and (args.ps or not args.workers or not args.accelerator_type):
        raise TrainerError("--reduction-servers needs GPU workers (--workers and "
                           "--accelerator-type) and no --ps: both use worker pool 2")
    if args.tensorboard and not _TENSORBOARD.match(args.tensorboard):
        raise TrainerError("--tensorboard must be projects/P/locations/L/tensorboards/ID, got "
                           f"{args.tensorboard!r}")
    if args.tensorboard and not args.base_output_dir:
        raise TrainerError("--tensorboard needs --base-output-dir: Vertex streams the logs from "
                           "AIP_TENSORBOARD_LOG_DIR, which lies under it")
    if args.tensorboard and not args.service_account:
        raise TrainerError("--tensorboard needs --service-account: Vertex streams the logs to "
                           "TensorBoard as that account (it needs roles/aiplatform.user and "
                           "write access to --base-output-dir)")

    args_out = list(trainer_args)
    if args.tpu_type:
        args_out.append("--distribution-strategy=tpu")
    # An empty list is omitted, as protobuf's canonical JSON omits it.
    trainer = {"args": args_out} if args_out else {}
    if args.reduction_servers:
        # Pool 2 alone does not say "Reduction Server" (parameter servers look the same).
        trainer["env"] = [{"name": REDUCTION_SERVER_ENV, "value": "true"}]
    if package_uri:
        code = {"pythonPackageSpec": {"executorImageUri": args.executor_image_uri,
                                      "packageUris": [package_uri],
                                      "pythonModule": "trainer.task", **trainer}}
    else:
        code = {"containerSpec": {"imageUri": args.container_image_uri, **trainer}}
    gpu = (args.accelerator_type, args.accelerator_count) if args.accelerator_type else None
    if args.tpu_type:
        pools = {0: _pool("cloud-tpu", 1, code, (args.tpu_type, args.tpu_count))}
    else:
        pools = {0: _pool(args.machine_type, 1, code, gpu)}
    if args.workers:
        pools[1] = _pool(args.worker_machine_type or args.machine_type, args.workers, code, gpu)
    if args.ps:
        pools[2] = _pool(args.ps_machine_type, args.ps, code)
    if args.reduction_servers:
        pools[2] = _pool(args.reduction_server_machine_type, args.reduction_servers,
                         {"containerSpec": {"imageUri": REDUCTION_SERVER_IMAGE}})
    if args.evaluator:
        pools[3] = _pool(args.evaluator_machine_type or args.machine_type, 1, code)

    # A pool's position is its role; `{}` skips one.
    spec: dict = {"workerPoolSpecs": [pools.get(i, {}) for i in range(max(pools) + 1)]}
    scheduling = {}
    if args.timeout:
        scheduling["timeout"] = parse_duration(args.timeout)
    if args.restart_job_on_worker_restart:
        scheduling["restartJobOnWorkerRestart"] = True
    if args.spot:
        scheduling["strategy"] = "SPOT"
    if scheduling:
        spec["scheduling"] = scheduling
    if args.service_account:
        spec["serviceAccount"] = args.service_account
    if args.base_output_dir:
        spec["baseOutputDirectory"] = {"outputUriPrefix": args.base_output_dir}
    if args.tensorboard:
        spec["tensorboard"] = args.tensorboard
    if args.dataset:
        return plans.Request("train", "TrainingPipeline", plans.training_pipeline(
            args.display_name, spec, dataset_id(args.dataset, args.project, args.region),
            args.base_output_dir), note="Vertex exports the dataset's splits under the "
                                        "output directory and runs the job on them")
    return plans.Request("train", "CustomJob", {"displayName": args.display_name,
                                                "jobSpec": spec})


def gcloud_command(request: dict, project: str | None, region: str,
                   config_path: str = "custom_job.yaml") -> str:
    """A copy-pasteable shell snippet doing the same through gcloud's --config (CustomJobSpec).
    It names the project: gcloud's configured default may not be the one the image is in."""
    import yaml

    spec = yaml.safe_dump(request["jobSpec"], sort_keys=False).rstrip()
    return (f"cat > {config_path} <<'EOF'\n{spec}\nEOF\n"
            f"gcloud ai custom-jobs create --project={project or plans.PROJECT_PLACEHOLDER} "
            f"--region={region} "
            f"--display-name={request['displayName']} --config={config_path}")


def build_and_upload_sdist(staging_bucket: str, upload: bool) -> str:
    """Builds the sdist from the checkout's setup.py; uploads it unless this is a dry run;
    returns its gs:// URI."""
    source = images.checkout()
    if source is None:
        raise TrainerError("--staging-bucket builds our sdist from a source checkout, and this "
                           "vertex-trainer is installed without one: run our image instead "
                           "(--build cloud), or give an uploaded --package-uri")
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", out],
                       cwd=source, check=True, capture_output=True)
        (sdist,) = Path(out).glob("*.tar.gz")
        folder = f"{staging_bucket.rstrip('/')}/packages"
        if upload:
            from trainer.tools.gcs_upload import upload as upload_files

            upload_files([str(sdist)], folder, progress=False)
            print(f"uploaded {sdist.name} to {folder}/", flush=True)
    return f"{folder}/{sdist.name}"


def source_tag() -> str:
    """The image tag for --build: the checkout's short commit, else (an installed package) the
    time."""
    source = images.checkout()
    if source is not None:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source,
                               capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.strip()
    return time.strftime("dev-%Y%m%d-%H%M%S")


def build_commands(mode: str, project: str | None, tag: str, kinds: dict[str, str],
                   gpu: bool = False) -> list[tuple[str, list[str]]]:
    """(step, command) pairs that build and push our images `{kind: image:tag}` (`gpu`: the
    training image with CUDA): with Cloud Build (the checkout's cloudbuild.yaml, tests included;
    from an installed package a generated config over the build context) or with docker here."""
    project = project or plans.PROJECT_PLACEHOLDER
    context = Path(tempfile.gettempdir()) / f"vertex-trainer-context-{tag}"
    build_args = {"TENSORFLOW": GPU_TENSORFLOW, "NCCL_PLUGIN": "google-reduction-server"} \
        if gpu else {}
    make_context = [sys.executable, "-m", "trainer.containers.images", str(context)]
    if mode == "cloud":
        source = images.checkout()
        if source is not None and not gpu and set(kinds) <= {"training", "serving"}:
            return [("build", ["gcloud", "builds", "submit", f"--project={project}",
                               f"--config={source / 'cloudbuild.yaml'}",
                               f"--substitutions=SHORT_SHA={tag}", str(source)])]
        config_flags = [f"--cloud-build={kind}={image}" for kind, image in kinds.items()]
        config_flags += [f"--build-arg={key}={value}" for key, value in build_args.items()]
        return [("build context", [*make_context, *config_flags]),
                ("build", ["gcloud", "builds", "submit", f"--project={project}",
                           f"--config={context / images.CLOUD_BUILD_FILE}", str(context)])]
    commands = [("build context", make_context)]
    for kind, image in kinds.items():
        commands.append((f"build {kind} image", images.build_command(
            kind, image, context, build_args if kind == "training" else {})))
    commands += [(f"push {kind} image", ["docker", "push", image]) for kind, image in kinds.items()]
    return commands


def run_build(commands: list[tuple[str, list[str]]], quiet: bool = False) -> None:
    """Runs each command; `quiet` keeps their output unless one fails (then its last lines)."""
    for step, command in commands:
        print("+ " + " ".join(command), flush=True)
        done = subprocess.run(command, capture_output=quiet, text=True)
        if done.returncode:
            if quiet:
                print("\n".join((done.stdout + done.stderr).splitlines()[-30:]), file=sys.stderr)
            raise TrainerError(f"{step} (`{' '.join(command[:3])}`) failed with exit code "
                               f"{done.returncode}")


def choose_code(args: argparse.Namespace, today: date) -> list[tuple[str, list[str]]]:
    """Settles what the job runs (sets args.container_image_uri unless it is the legacy package
    path); returns the commands --build runs first."""
    package = args.staging_bucket or args.package_uri
    if args.staging_bucket and args.package_uri:
        raise TrainerError("give --staging-bucket or --package-uri, not both")
    if package and not args.executor_image_uri:
        raise TrainerError("--staging-bucket/--package-uri run our sdist on a Vertex prebuilt "
                           "image (legacy): name it with --executor-image-uri, e.g. "
                           f"{PREBUILT_CPU_IMAGE} (available until "
                           f"{end_of_availability(PREBUILT_CPU_IMAGE)})")
    if args.executor_image_uri and not package:
        raise TrainerError("--executor-image-uri runs our sdist: give --staging-bucket or "
                           "--package-uri with it")
    if package and (args.container_image_uri or args.build):
        raise TrainerError("give our image (--container-image-uri or --build) or the legacy "
                           "package (--executor-image-uri with a package), not both")
    if args.container_image_uri and args.build:
        raise TrainerError("--build names its own image (tagged with this commit); drop "
                           "--container-image-uri")
    if args.tpu_type and not args.container_image_uri:
        raise TrainerError("--tpu-type needs --container-image-uri: a TPU image carries libtpu, "
                           "which our CPU/GPU images do not (and Vertex's TPU images stop at "
                           "TF 2.15)")
    for flag, value in (("--staging-bucket", args.staging_bucket),
                        ("--package-uri", args.package_uri)):
        if value and not value.startswith("gs://"):
            raise TrainerError(f"{flag} must be a gs:// path, got {value!r}")
    if package:
        warning = past_end_warning(
            args.executor_image_uri, today,
            "run our image instead (--build cloud, or --container-image-uri)")
        if warning:
            print(warning, file=sys.stderr)
        return []
    gpu = bool(args.accelerator_type)
    if not args.build:
        args.container_image_uri = args.container_image_uri or default_image(args.project, gpu)
        return []
    tag = source_tag()
    args.container_image_uri = default_image(args.project, gpu).rsplit(":", 1)[0] + f":{tag}"
    return build_commands(args.build, args.project, tag, {"training": args.container_image_uri},
                          gpu)


def job_prerequisites(args: argparse.Namespace, image_list: list[str], session=None
                      ) -> list[checks.Prerequisite]:
    buckets = [args.base_output_dir or "", args.staging_bucket or ""]
    return checks.prerequisites(args.project, images=image_list, build=args.build,
                                buckets=buckets, service_account=args.service_account,
                                tensorboard=args.tensorboard, session=session)


# (client, create method, get method, request keyword, state prefix, console page) per type
_SERVICES = {
    "CustomJob": ("JobServiceClient", "create_custom_job", "get_custom_job", "custom_job",
                  "JOB_STATE", "training/{id}/cpu"),
    "TrainingPipeline": ("PipelineServiceClient", "create_training_pipeline",
                         "get_training_pipeline", "training_pipeline", "PIPELINE_STATE",
                         "training/{id}"),
    "BatchPredictionJob": ("JobServiceClient", "create_batch_prediction_job",
                           "get_batch_prediction_job", "batch_prediction_job", "JOB_STATE",
                           "batch-predictions/{id}"),
}
_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")


def submit(request: plans.Request, project: str, region: str, poll_secs: float,
           follow: bool) -> int:
    """Creates the job (custom, batch prediction, or a pipeline) and, with `follow`, reports its
    state until it ends; 0 if it succeeded."""
    from google.cloud import aiplatform_v1

    client_name, create, get, keyword, prefix, page = _SERVICES[request.type_name]
    client = getattr(aiplatform_v1, client_name)(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})
    job = getattr(client, create)(parent=f"projects/{project}/locations/{region}",
                                  **{keyword: request.message()})
    job_id = job.name.rsplit("/", 1)[1]
    print(f"created {job.name}\n  console: https://console.cloud.google.com/vertex-ai/locations/"
          f"{region}/{page.format(id=job_id)}?project={project}", flush=True)
    if request.type_name == "CustomJob":
        print(f"  logs: gcloud ai custom-jobs stream-logs {job_id} --project={project} "
              f"--region={region}", flush=True)
    if not follow:
        return 0
    state = None
    try:
        while True:
            job = getattr(client, get)(name=job.name)
            if job.state.name != state:
                state = job.state.name
                print(f"{time.strftime('%H:%M:%S')} {state}", flush=True)
            if state in {f"{prefix}_{end}" for end in _TERMINAL}:
                if job.error.message:
                    print(f"error: {job.error.message}", file=sys.stderr)
                return 0 if state == f"{prefix}_SUCCEEDED" else 1
            time.sleep(poll_secs)
    except KeyboardInterrupt:
        print("stopped following; the job keeps running", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="vertex-trainer submit", allow_abbrev=False,
                      usage="%(prog)s [options] -- TRAINER_FLAGS...",
                      description=__doc__.split("\n\n")[0])
    add_location(p, "required unless --dry-run (which then names PROJECT)")
    p.add_argument("--display-name", default="vertex-trainer")
    p.add_argument("--dataset", metavar="ID",
                   help="a Vertex managed image dataset (ID or resource name): the job becomes "
                        "a TrainingPipeline that hands its splits to the trainer (AIP_*)")
    code = p.add_argument_group("code: our image (default), or the legacy package path")
    code.add_argument("--container-image-uri",
                      help="our training image; default: what cloudbuild.yaml pushes, "
                           + OUR_IMAGE + ":latest (GPU: trainer-gpu)")
    code.add_argument("--build", choices=("local", "cloud"),
                      help="build and push our image first (tagged with this commit): with "
                           "docker here, or with Cloud Build (cloudbuild.yaml in a checkout, "
                           "else a generated config over the installed package)")
    code.add_argument("--executor-image-uri",
                      help=f"legacy: a Vertex prebuilt image to run our sdist on, e.g. "
                           f"{PREBUILT_CPU_IMAGE} (end of availability "
                           f"{end_of_availability(PREBUILT_CPU_IMAGE)})")
    code.add_argument("--staging-bucket",
                      help="legacy: gs://bucket to upload the sdist built from setup.py")
    code.add_argument("--package-uri",
                      help="legacy: an already uploaded gs://.../vertex-trainer-*.tar.gz")
    cluster = p.add_argument_group("cluster")
    cluster.add_argument("--machine-type", default=DEFAULT_MACHINE, help="the chief's")
    cluster.add_argument("--workers", type=int, default=0, help="worker pool 1 replicas")
    cluster.add_argument("--worker-machine-type")
    cluster.add_argument("--ps", type=int, default=0, help="parameter servers (pool 2)")
    cluster.add_argument("--ps-machine-type", default=DEFAULT_MACHINE)
    cluster.add_argument("--reduction-servers", type=int, default=0,
                         help="Reduction Server replicas (pool 2) for GPU workers' all-reduce")
    cluster.add_argument("--reduction-server-machine-type", default="n1-highcpu-16")
    cluster.add_argument("--evaluator", action="store_true", help="one evaluator (pool 3)")
    cluster.add_argument("--evaluator-machine-type")
    cluster.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4, for chief and workers")
    cluster.add_argument("--accelerator-count", type=int)
    cluster.add_argument("--tpu-type", help="e.g. TPU_V3: one cloud-tpu VM (needs a container)")
    cluster.add_argument("--tpu-count", type=int, default=8)
    run = p.add_argument_group("scheduling and outputs")
    run.add_argument("--base-output-dir", help="gs:// root; Vertex sets AIP_MODEL_DIR etc. under it")
    run.add_argument("--timeout", help="e.g. 2h")
    run.add_argument("--spot", action="store_true", help="Spot VMs (preemptible, cheaper)")
    run.add_argument("--restart-job-on-worker-restart", action="store_true")
    run.add_argument("--service-account")
    run.add_argument("--tensorboard", metavar="projects/P/locations/L/tensorboards/ID",
                     help="stream AIP_TENSORBOARD_LOG_DIR to this Vertex TensorBoard (needs "
                          "--service-account and --base-output-dir)")
    add_dry_run(p, "the request JSON, the gcloud equivalent, the build commands and the "
                       "prerequisites (no credentials needed)")
    add_follow_flags(p)
    return p


def add_follow_flags(group, *, optional: bool = True) -> None:
    """The flags of `submit`'s following: how often, and (when `optional`) whether at all."""
    group.add_argument("--poll-secs", type=float, default=30, help="how often to check the job")
    if optional:
        group.add_argument("--no-follow", action="store_true",
                           help="return once the job is created instead of following it to its "
                                "end")


def main(argv=None) -> int:
    def body():
        with usage_errors():
            args, trainer_args = parse_command(build_parser(), argv)
            for name in ("workers", "ps", "reduction_servers"):
                if getattr(args, name) < 0:
                    raise TrainerError(f"--{name.replace('_', '-')} must be >= 0")
            if not (args.dry_run or args.project):
                raise TrainerError("--project is required to submit (or use --dry-run)")
            check_job(args, trainer_args)
            builds = choose_code(args, date.today())
            # The request is checked once here with a placeholder for the sdist, so that a
            # legacy run fails before building and uploading it.
            build_request(args, trainer_args, f"{args.staging_bucket}/packages/sdist.tar.gz"
                          if args.staging_bucket else args.package_uri).message()
        image_list = [args.container_image_uri] if args.container_image_uri else []
        if args.dry_run:
            package_uri = args.package_uri
            if args.staging_bucket:
                package_uri = build_and_upload_sdist(args.staging_bucket, upload=False)
            request = build_request(args, trainer_args, package_uri)
            print(json.dumps(request.body, indent=2))
            if request.type_name == "CustomJob":
                print("\n# the same through gcloud:\n" + gcloud_command(
                    request.body, args.project, args.region))
            if builds:
                print("\n# --build first runs:\n" + "\n".join(" ".join(c) for _, c in builds))
            print("\n# prerequisites (each with the command that creates it):\n" + "\n".join(
                f"- {p.line()}" for p in job_prerequisites(args, image_list)))
            return 0
        if args.build == "local":
            require_docker("build with Cloud Build (--build cloud)")
        session = checks.session_if_credentials()
        checks.verify(job_prerequisites(args, image_list, session))
        package_uri = args.package_uri
        if args.staging_bucket:
            package_uri = build_and_upload_sdist(args.staging_bucket, upload=True)
        run_build(builds)
        return submit(build_request(args, trainer_args, package_uri), args.project,
                      args.region, args.poll_secs, not args.no_follow)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
