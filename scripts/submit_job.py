"""Submit the trainer to Vertex AI as a custom job, or print that request offline (--dry-run).

    python scripts/submit_job.py --project P --region us-central1 --staging-bucket gs://B \
        --workers 2 --accelerator-type NVIDIA_TESLA_T4 --base-output-dir gs://B/runs/1 \
        -- --train-files 'gs://B/mnist/train-*' --eval-files 'gs://B/mnist/eval-*'

Runs either our Python package (an sdist built from setup.py, uploaded to --staging-bucket, or an
existing --package-uri) on Vertex's prebuilt TF 2.17 image, or our container (--container-image-
uri). Worker pools follow Vertex: 0 chief, 1 workers, 2 parameter servers, 3 evaluator. The
request is checked with the aiplatform SDK's own CustomJob type before anything is sent; the
dry-run prints exactly what would be sent, and the equivalent `gcloud ai custom-jobs create`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as `python scripts/x.py`: make `scripts.*` importable too
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.errors import TrainerError

REPO = Path(__file__).resolve().parent.parent
CPU_IMAGE = "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest"
GPU_IMAGE = "us-docker.pkg.dev/vertex-ai/training/tf-gpu.2-17.py310:latest"
DEFAULT_MACHINE = "n1-standard-4"
_TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
             "JOB_STATE_EXPIRED"}
_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> str:
    """'90m' -> '5400s' (protobuf Duration JSON)."""
    found = _DURATION.match(text.strip())
    if not found or int(found[1]) == 0:
        raise TrainerError(f"--timeout must be like 30m, 2h or 1d, got {text!r}")
    return f"{int(found[1]) * {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}[found[2]]}s"


def _pool(machine_type: str, replicas: int, code: dict, accelerator: tuple | None = None) -> dict:
    machine = {"machineType": machine_type}
    if accelerator:
        machine["acceleratorType"], machine["acceleratorCount"] = accelerator
    # replicaCount is an int64: its canonical JSON form is a string.
    return {"machineSpec": machine, "replicaCount": str(replicas), **code}


def build_request(args: argparse.Namespace, trainer_args: list[str],
                  package_uri: str | None) -> dict:
    """The CustomJob request (REST/JSON shape) for the parsed flags; pure, no network."""
    if args.tpu_type and (args.workers or args.ps or args.accelerator_type):
        raise TrainerError("--tpu-type runs one TPU VM: it cannot be combined with --workers, "
                           "--ps or --accelerator-type")
    if args.tpu_type and not args.container_image_uri:
        raise TrainerError("--tpu-type needs --container-image-uri: Vertex's TPU training images "
                           "stop at TF 2.15, below this package's TensorFlow >= 2.17")
    if args.ps and not args.workers:
        raise TrainerError("--ps needs --workers: parameter servers serve workers")
    if bool(args.accelerator_type) != bool(args.accelerator_count):
        raise TrainerError("--accelerator-type and --accelerator-count go together")
    if args.base_output_dir and not args.base_output_dir.startswith("gs://"):
        raise TrainerError(f"--base-output-dir must be a gs:// path, got {args.base_output_dir!r}")

    args_out = list(trainer_args)
    if args.tpu_type:
        args_out.append("--distribution-strategy=tpu")
    # An empty list is omitted, as protobuf's canonical JSON omits it.
    trainer = {"args": args_out} if args_out else {}
    if args.container_image_uri:
        code = {"containerSpec": {"imageUri": args.container_image_uri, **trainer}}
    else:
        image = args.executor_image_uri or (GPU_IMAGE if args.accelerator_type else CPU_IMAGE)
        code = {"pythonPackageSpec": {"executorImageUri": image, "packageUris": [package_uri],
                                      "pythonModule": "trainer.task", **trainer}}
    gpu = (args.accelerator_type, args.accelerator_count) if args.accelerator_type else None
    if args.tpu_type:
        pools = {0: _pool("cloud-tpu", 1, code, (args.tpu_type, args.tpu_count))}
    else:
        pools = {0: _pool(args.machine_type, 1, code, gpu)}
    if args.workers:
        pools[1] = _pool(args.worker_machine_type or args.machine_type, args.workers, code, gpu)
    if args.ps:
        pools[2] = _pool(args.ps_machine_type, args.ps, code)
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
    return {"displayName": args.display_name, "jobSpec": spec}


def validate_request(request: dict) -> dict:
    """Parses the request with the SDK's CustomJob type; unknown or mistyped fields fail."""
    from google.cloud.aiplatform_v1.types import CustomJob
    from google.protobuf import json_format

    try:
        job = CustomJob.from_json(json.dumps(request))
    except (json_format.ParseError, ValueError) as err:
        raise TrainerError(f"the CustomJob request is invalid: {err}") from None
    return json_format.MessageToDict(CustomJob.pb(job))


def gcloud_command(request: dict, region: str, config_path: str = "custom_job.yaml") -> str:
    """A copy-pasteable shell snippet doing the same through gcloud's --config (CustomJobSpec)."""
    import yaml

    spec = yaml.safe_dump(request["jobSpec"], sort_keys=False).rstrip()
    return (f"cat > {config_path} <<'EOF'\n{spec}\nEOF\n"
            f"gcloud ai custom-jobs create --region={region} "
            f"--display-name={request['displayName']} --config={config_path}")


def build_and_upload_sdist(staging_bucket: str, upload: bool) -> str:
    """Builds the sdist from setup.py; uploads it unless this is a dry run; returns its gs:// URI."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", out], cwd=REPO,
                       check=True, capture_output=True)
        (sdist,) = Path(out).glob("*.tar.gz")
        folder = f"{staging_bucket.rstrip('/')}/packages"
        if upload:
            from scripts.gcs_upload import upload as upload_files

            upload_files([str(sdist)], folder, progress=False)
            print(f"uploaded {sdist.name} to {folder}/", flush=True)
    return f"{folder}/{sdist.name}"


def submit(request: dict, project: str, region: str, poll_secs: float, follow: bool) -> int:
    """Creates the job and (with `follow`) its state until it ends; 0 if it succeeded."""
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.JobServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})
    job = client.create_custom_job(parent=f"projects/{project}/locations/{region}",
                                   custom_job=request)
    job_id = job.name.rsplit("/", 1)[1]
    print(f"created {job.name}\n  console: https://console.cloud.google.com/vertex-ai/locations/"
          f"{region}/training/{job_id}/cpu?project={project}\n  logs: gcloud ai custom-jobs "
          f"stream-logs {job_id} --region={region}", flush=True)
    if not follow:
        return 0
    state = None
    try:
        while True:
            job = client.get_custom_job(name=job.name)
            if job.state.name != state:
                state = job.state.name
                print(f"{time.strftime('%H:%M:%S')} {state}", flush=True)
            if state in _TERMINAL:
                if job.error.message:
                    print(f"error: {job.error.message}", file=sys.stderr)
                return 0 if state == "JOB_STATE_SUCCEEDED" else 1
            time.sleep(poll_secs)
    except KeyboardInterrupt:
        print("stopped following; the job keeps running", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/submit_job.py", allow_abbrev=False,
                                usage="%(prog)s [options] -- TRAINER_FLAGS...",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--project", help="required unless --dry-run")
    p.add_argument("--region", default="us-central1")
    p.add_argument("--display-name", default="vertex-trainer")
    code = p.add_argument_group("code (one of)")
    code.add_argument("--staging-bucket", help="gs://bucket to upload the sdist built from setup.py")
    code.add_argument("--package-uri", help="an already uploaded gs://.../vertex-trainer-*.tar.gz")
    code.add_argument("--container-image-uri", help="our training image instead of a package")
    code.add_argument("--executor-image-uri",
                      help=f"prebuilt image for the package; default {CPU_IMAGE} (GPU: tf-gpu)")
    cluster = p.add_argument_group("cluster")
    cluster.add_argument("--machine-type", default=DEFAULT_MACHINE, help="the chief's")
    cluster.add_argument("--workers", type=int, default=0, help="worker pool 1 replicas")
    cluster.add_argument("--worker-machine-type")
    cluster.add_argument("--ps", type=int, default=0, help="parameter servers (pool 2)")
    cluster.add_argument("--ps-machine-type", default=DEFAULT_MACHINE)
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
    p.add_argument("--dry-run", action="store_true",
                   help="print the request JSON and the gcloud equivalent; send nothing")
    p.add_argument("--poll-secs", type=float, default=30, help="how often to check the job")
    p.add_argument("--no-follow", action="store_true",
                   help="return once the job is created instead of following it to its end")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    trainer_args = argv[split + 1:]
    try:
        for name in ("workers", "ps"):
            if getattr(args, name) < 0:
                raise TrainerError(f"--{name} must be >= 0")
        if sum(bool(x) for x in (args.staging_bucket, args.package_uri,
                                 args.container_image_uri)) != 1:
            raise TrainerError("give exactly one of --staging-bucket, --package-uri, "
                               "--container-image-uri")
        for flag, value in (("--staging-bucket", args.staging_bucket),
                            ("--package-uri", args.package_uri)):
            if value and not value.startswith("gs://"):
                raise TrainerError(f"{flag} must be a gs:// path, got {value!r}")
        if not (args.dry_run or args.project):
            raise TrainerError("--project is required to submit (or use --dry-run)")
        package_uri = args.package_uri
        if args.staging_bucket:
            package_uri = build_and_upload_sdist(args.staging_bucket, upload=not args.dry_run)
        request = build_request(args, trainer_args, package_uri)
        validate_request(request)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(request, indent=2))
        print("\n# the same through gcloud:\n" + gcloud_command(request, args.region))
        return 0
    return submit(request, args.project, args.region, args.poll_secs, not args.no_follow)


if __name__ == "__main__":
    sys.exit(main())
