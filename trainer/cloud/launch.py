"""`vertex-trainer launch DATA`: photos to a live endpoint, on Vertex AI or on this machine.

    vertex-trainer launch photos/ --local -- --max-steps 300
    vertex-trainer launch photos/ --project P --bucket gs://B/flowers -- --max-steps 3000
    vertex-trainer launch 1234567890 --project P --bucket gs://B/flowers   # a managed dataset
    vertex-trainer launch gs://B/flowers.jsonl --dry-run

DATA is a photo folder (ROOT/CLASS/x.jpg), a CSV/JSONL manifest (local or gs://) or a Vertex
managed image dataset (ID or resource name). The steps, in order: prepare (local photos become
encoded TFRecords with a held-out eval split, uploaded under --bucket for a Vertex run), build our
training and serving images from this installed package (Cloud Build, or docker here), train
(a CustomJob; a TrainingPipeline naming the managed dataset, so Vertex hands its splits to the
trainer as AIP_* variables), register the export with our serving image, deploy it, classify a
held-back image, and print the endpoint and a ready `curl`.

Every step is first a plan: the Vertex requests built with the aiplatform SDK's own types
(trainer.cloud.plans) after the checks of trainer.cloud.checks. --dry-run prints the plan and
sends nothing (no --project or credentials needed). --local runs the same plan here: training in
our training container (or with --no-container as a process) with the AIP_* directories Vertex
would set, serving in our serving container through the SDK's LocalModel/LocalEndpoint, the
smoke prediction through that client. --tune CONFIG runs the study first (`vertex-trainer tune`)
and trains with the best trial's parameters.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.cli import (OneLineParser, add_dry_run, add_location, run_cli,
                         parse_command, usage_errors)
from trainer.cloud import checks, deploy, plans, submit
from trainer.containers.daemon import require_docker
from trainer.errors import TrainerError

_DATASET = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/datasets/)?\d+$")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
LOCAL_IMAGES = {"training": "vertex-trainer/trainer:local",
                "serving": "vertex-trainer/serving:local"}
DATA_FLAGS = ("train_files", "eval_files", "test_files", "bundled_sample")
DEBIAN_BASE = "debian"  # --base-image: build a base from Debian's mirror (no Docker Hub)
# The smoke prediction's body when the held-back image is only known once the run started.
HELD_BACK_PLACEHOLDER = "HELD_BACK_IMAGE_BASE64"


@dataclass(frozen=True)
class Data:
    """What DATA names: a `folder`, a `manifest` or a managed `dataset`."""

    kind: str
    where: str

    @property
    def remote(self) -> bool:
        return self.kind == "dataset" or self.where.startswith("gs://")


def classify(text: str) -> Data:
    """DATA as given on the command line; local paths must exist."""
    if _DATASET.match(text):
        return Data("dataset", text)
    if text.startswith("gs://"):
        kind = "manifest" if text.lower().endswith(MANIFEST_SUFFIXES) else "folder"
        return Data(kind, text.rstrip("/") if kind == "folder" else text)
    path = Path(text).expanduser()
    if path.is_dir():
        return Data("folder", str(path.resolve()))
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return Data("manifest", str(path.resolve()))
    if not path.exists():
        raise TrainerError(f"DATA: {text} does not exist (expected a photo folder "
                           "ROOT/CLASS/image, a .csv/.jsonl manifest, a gs:// URI or a managed "
                           "dataset ID: a number or projects/P/locations/R/datasets/N)")
    raise TrainerError(f"DATA: {text} is neither a photo folder (ROOT/CLASS/image), a .csv/.jsonl "
                       "manifest, a gs:// URI nor a managed dataset ID")


@dataclass(frozen=True)
class HeldBack:
    """The image the smoke prediction classifies: not trained on (the eval split)."""

    path: str | None  # a local file; None until the run finds one (gs:// data, datasets)
    label: str = ""


@dataclass(frozen=True)
class Layout:
    """Where one run keeps things: prepared data (None: the trainer reads DATA as it is), the
    job's base output directory (AIP_MODEL_DIR is its model/), and local files of the run."""

    data_dir: str | None
    run_dir: str
    local_dir: Path


def layout(args: argparse.Namespace, data: Data, run_name: str) -> Layout:
    """Each run under runs/NAME/ (locally, or under --bucket), its prepared data in data/ there:
    a rerun never globs another run's shards."""
    local_dir = Path(args.output_dir).resolve() / "runs" / run_name
    run_dir = str(local_dir) if args.local else f"{args.bucket.rstrip('/')}/runs/{run_name}"
    return Layout(None if data.remote else f"{run_dir}/data", run_dir, local_dir)


def data_flags(data: Data, where: Layout) -> list[str]:
    """The trainer's data flags: the prepared splits, DATA itself (a gs:// manifest picks each
    split by its items' ml_use), or none (a managed dataset arrives as AIP_* variables)."""
    if where.data_dir:
        return ["--train-files", f"{where.data_dir}/train-*", "--eval-files",
                f"{where.data_dir}/eval-*"]
    if data.kind == "dataset":
        return []
    return ["--train-files", data.where, "--eval-files", data.where]


def held_back(data: Data, eval_fraction: float | None) -> HeldBack:
    """The first image of the eval split that prepare writes (the same hash decides), for local
    photos; gs:// data and datasets are looked at when the run starts."""
    if data.remote:
        return HeldBack(None)
    from trainer.tools.prepare_images import list_images

    examples = sorted((e for e in list_images(data.where, eval_fraction)
                       if e.split in ("eval", "test")), key=lambda e: e.uri)
    if not examples:
        raise TrainerError(f"DATA: {data.where} puts no image in the eval split, so none is "
                           "held back for the smoke prediction: add images, raise "
                           "--eval-fraction, or give --predict-image")
    return HeldBack(examples[0].uri, examples[0].label)


def images_for(args: argparse.Namespace, tag: str) -> dict[str, str]:
    if args.training_image:
        return {"training": args.training_image, "serving": args.serving_image}
    if args.local:
        return dict(LOCAL_IMAGES)
    gpu = bool(args.accelerator_type)
    training = submit.default_image(args.project, gpu).rsplit(":", 1)[0] + f":{tag}"
    serving = submit.OUR_SERVING_IMAGE.format(project=args.project or plans.PROJECT_PLACEHOLDER)
    return {"training": training, "serving": f"{serving}:{tag}"}


def build_commands(args: argparse.Namespace, image_names: dict[str, str], tag: str,
                   base_image: str | None) -> list[tuple[str, list[str]]]:
    if args.training_image:
        return []
    if not args.local:
        return submit.build_commands(args.build, args.project, tag, image_names,
                                     gpu=bool(args.accelerator_type))
    from trainer.containers import images

    context = Path(args.output_dir).resolve() / "context"
    build_args = {"BASE_IMAGE": base_image} if base_image else {}
    kinds = ["serving"] if args.no_container else ["training", "serving"]
    return [("build context", [sys.executable, "-m", "trainer.containers.images", str(context)])] \
        + [(f"build {kind} image", images.build_command(kind, image_names[kind], context,
                                                        build_args)) for kind in kinds]


def smoke_body(image: HeldBack) -> bytes:
    """What the smoke prediction sends: a TF Serving body for the `encoded_image` signature."""
    if image.path is None:
        return json.dumps({"signature_name": "encoded_image", "instances": [
            {"image_bytes": {"b64": HELD_BACK_PLACEHOLDER}}]}).encode()
    return deploy.image_body([image.path])


def build_plan(args: argparse.Namespace, data: Data, trainer_args: list[str], where: Layout,
               image: HeldBack, tag: str, base_image: str | None = None,
               session=None) -> plans.Plan:
    """The whole chain, checked: commands first (prepare, build), then the Vertex requests,
    and a Vertex run's prerequisites (`session`: for their online checks, made only when run)."""
    plan = plans.Plan()
    image_names = images_for(args, tag)
    if where.data_dir:
        plan.commands.append(("prepare", ["vertex-trainer", "prepare",
                                          *prepare_args(data, where, args.eval_fraction)]))
    plan.commands += build_commands(args, image_names, tag, base_image)

    job_argv = ["--region", args.region, "--display-name", args.display_name,
                "--container-image-uri", image_names["training"], "--machine-type",
                args.machine_type, "--base-output-dir", where.run_dir]
    if args.project:
        job_argv += ["--project", args.project]
    if args.accelerator_type:
        job_argv += ["--accelerator-type", args.accelerator_type, "--accelerator-count",
                     str(args.accelerator_count)]
    if args.timeout:
        job_argv += ["--timeout", args.timeout]
    if data.kind == "dataset":
        job_argv += ["--dataset", data.where]
    job_args = submit.build_parser().parse_args(job_argv)
    full_args = [*data_flags(data, where), *trainer_args]
    if args.local:
        checks.trainer_flags(full_args)
    else:
        submit.check_job(job_args, full_args)
    plan.requests.append(submit.build_request(job_args, full_args, None))

    deploy_argv = ["--artifact-uri", f"{where.run_dir}/model", "--region", args.region,
                   "--display-name", args.display_name, "--container-image-uri",
                   image_names["serving"], "--machine-type", args.serving_machine_type]
    if args.project:
        deploy_argv += ["--project", args.project]
    requests = deploy.build_requests(deploy.build_parser().parse_args(deploy_argv),
                                     on_vertex=not args.local)
    endpoint = requests["deployModel"]["endpoint"]
    requests["rawPredict"] = {"endpoint": endpoint, "httpBody": {
        "contentType": "application/json",
        "data": base64.b64encode(smoke_body(image)).decode()}}
    plan.requests += deploy.as_plan(requests)
    if image.path is None:
        held = plan.requests[-1]
        plan.requests[-1] = plans.Request(held.step, held.type_name, held.body, note=(
            f"{HELD_BACK_PLACEHOLDER}: an image of the data's test or validation split, "
            "chosen once the training ran"))
    plans.check(plan)
    if not args.local:
        plan.prerequisites = checks.prerequisites(
            args.project, images=list(image_names.values()),
            build=None if args.training_image else args.build,
            buckets=[where.run_dir] + ([where.data_dir] if where.data_dir else []),
            session=session)
    return plan


def prepare_args(data: Data, where: Layout, eval_fraction: float | None) -> list[str]:
    """prepare's flags; --eval-fraction only when given (split folders refuse one)."""
    return ["--input", data.where, "--output-dir", where.data_dir,
            *(["--eval-fraction", str(eval_fraction)] if eval_fraction is not None else [])]


def prepare(data: Data, where: Layout, eval_fraction: float | None) -> None:
    from trainer.tools import prepare_images

    code = prepare_images.main(prepare_args(data, where, eval_fraction))
    if code:
        raise TrainerError(f"prepare of {data.where} failed (exit {code}, its error above)")


def tune(args: argparse.Namespace, data: Data, where: Layout, trainer_args: list[str]
         ) -> list[str]:
    """Runs the study here through `vertex-trainer tune`; returns the best trial's parameters as
    trainer flags."""
    from hptuning.__main__ import main as tune_main

    output = where.local_dir / "tune"
    code = tune_main([args.tune, "--output-dir", str(output), "--",
                      *data_flags(data, where), *trainer_args])
    if code:
        raise TrainerError(f"the study {args.tune} failed (exit {code}, its error above)")
    results = json.loads((output / "results.json").read_text())
    best = next((t for t in results["trials"] if t["trial_id"] == results["bestTrial"]), None)
    if best is None:
        raise TrainerError(f"the study {args.tune} has no scored trial to train")
    print(f"best trial {best['trial_id']}: {results['metric']} {best['value']:.6g} with "
          + " ".join(f"--{k}={v}" for k, v in best["parameters"].items()), flush=True)
    return [f"--{key}={value}" for key, value in best["parameters"].items()]


# --- this machine ---------------------------------------------------------------------------

def aip_environment(job_spec: dict) -> dict[str, str]:
    """The directories Vertex sets for a job with a base output directory."""
    base = job_spec["baseOutputDirectory"]["outputUriPrefix"].rstrip("/")
    return {"AIP_MODEL_DIR": f"{base}/model", "AIP_CHECKPOINT_DIR": f"{base}/checkpoints",
            "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs"}


def mounts(run_dir: str, trainer_args: list[str]) -> list[str]:
    """What the training container sees of this machine, at the same paths: the run (written),
    the working directory (relative paths in the flags) and the folders of files the flags
    name elsewhere (both read-only)."""
    flags = checks.trainer_flags(trainer_args)
    here = os.getcwd()
    found = {f"{run_dir}:{run_dir}"}
    if here != "/":  # docker mounts nothing over the container's root
        found.add(f"{here}:{here}:ro")
    for name in ("label_map", "pretrained_weights", "init_checkpoint"):
        value = getattr(flags, name)
        if value and value != "imagenet" and not checks.is_cloud_path(value):
            folder = os.path.dirname(os.path.abspath(value))
            if not (folder + "/").startswith(here + "/"):
                found.add(f"{folder}:{folder}:ro")
    return sorted(found)


def train_here(request: plans.Request, container: bool) -> None:
    """The CustomJob's chief as Vertex runs it: its image, args and env, with the AIP_*
    directories, in a container on the host network, as this user (or as a process)."""
    spec = request.body["jobSpec"]
    pool = spec["workerPoolSpecs"][0]["containerSpec"]
    args = pool.get("args", [])
    env = {**{e["name"]: e["value"] for e in pool.get("env", [])}, **aip_environment(spec)}
    for directory in env.values():
        if directory.startswith("/"):
            Path(directory).mkdir(parents=True, exist_ok=True)
    if not container:
        command = [sys.executable, "-m", "trainer.task", *args]
        code = subprocess.run(command, env={**os.environ, **env}).returncode
    else:
        name = f"vertex-trainer-launch-{os.getpid()}"
        run_dir = spec["baseOutputDirectory"]["outputUriPrefix"]
        volumes = [arg for mount in mounts(run_dir, args) for arg in ("--volume", mount)]
        command = ["docker", "run", "--rm", "--name", name, "--network", "host",
                   "--user", f"{os.getuid()}:{os.getgid()}", "--env", "HOME=/tmp",
                   "--workdir", os.getcwd(), *volumes,
                   *[arg for key, value in env.items() for arg in ("--env", f"{key}={value}")],
                   pool["imageUri"], *args]
        print("+ " + " ".join(command), flush=True)
        try:
            code = subprocess.run(command).returncode
        except KeyboardInterrupt:
            subprocess.run(["docker", "rm", "--force", name], capture_output=True)
            raise
    if code:
        raise TrainerError(f"training failed with exit code {code} (its error above)")


def predictions_line(response: dict, image: HeldBack) -> str:
    (prediction,) = response["predictions"]
    label = prediction.get("labels", prediction.get("classes"))
    line = f"{image.path}: {label} ({max(prediction['probabilities']):.3f})"
    return line + (f", true class {image.label}" if image.label else "")


def run_commands(plan: plans.Plan, data: Data, where: Layout, eval_fraction: float | None,
                 build_hint: str = "") -> None:
    """The plan's commands: prepare in this process, the builds as commands (a failed one's
    error ends with `build_hint`)."""
    if any(step == "prepare" for step, _ in plan.commands):
        print(f"== prepare {data.where} -> {where.data_dir}", flush=True)
        prepare(data, where, eval_fraction)
    builds = [(step, command) for step, command in plan.commands if step != "prepare"]
    if builds:
        print("== build the images", flush=True)
        try:
            submit.run_build(builds, quiet=True)
        except TrainerError as err:
            raise TrainerError(f"{err}{build_hint}") from None


def run_here(args: argparse.Namespace, plan: plans.Plan, data: Data, where: Layout,
             image: HeldBack, port: int) -> None:
    from trainer.cloud import local_endpoint

    run_commands(plan, data, where, args.eval_fraction, build_hint="" if args.base_image else (
        "; where Docker Hub (the Dockerfiles' base image) cannot be reached, give "
        "--base-image debian"))
    print("== train", flush=True)
    train_here(plan.get("train"), container=not args.no_container)
    upload = plan.get("uploadModel").body["model"]
    print(f"== serve {upload['artifactUri']} with {upload['containerSpec']['imageUri']} on "
          f"127.0.0.1:{port}", flush=True)
    body = base64.b64decode(plan.get("rawPredict").body["httpBody"]["data"])
    request_file = where.local_dir / "request.json"
    request_file.write_bytes(body)
    with local_endpoint.serve(upload["containerSpec"], upload["artifactUri"],
                              keep=not args.stop) as endpoint:
        response = endpoint.predict(request=body, headers={"Content-Type": "application/json"})
        if response.status_code != 200:
            raise TrainerError(f"the smoke prediction got HTTP {response.status_code}: "
                               f"{response.text[:300]}")
        print("prediction: " + predictions_line(response.json(), image), flush=True)
        route = upload["containerSpec"]["predictRoute"]
        print(f"endpoint: http://127.0.0.1:{port}{route}")
        print(f"curl -X POST http://127.0.0.1:{port}{route} -H 'Content-Type: application/json' "
              f"-d @{request_file}")
        if not args.stop:
            print(f"it keeps serving; stop it with: docker rm --force {endpoint.container.name}")


# --- Vertex AI --------------------------------------------------------------------------------

def held_out_on_gcs(where: Layout, data: Data) -> HeldBack:
    """After training: the first image of the test (else validation) split, from the gs://
    manifest, or for a managed dataset from the JSONL Vertex exported under the run; downloaded
    beside the run's local files."""
    from google.cloud import storage

    from trainer.data import manifests
    from trainer.tools.gcs_upload import split_gs

    client = storage.Client()
    if data.kind == "dataset":
        bucket, prefix = split_gs(where.run_dir.rstrip("/") + "/")
        blobs = sorted(b.name for b in client.list_blobs(bucket, prefix=prefix)
                       if re.search(r"/(test|validation)-[^/]*$", b.name))
        if not blobs:
            raise TrainerError(f"no exported test or validation split under {where.run_dir} to "
                               "pick the smoke prediction's image from: give --predict-image")
        text = client.bucket(bucket).blob(blobs[0]).download_as_text()
        source = f"gs://{bucket}/{blobs[0]}"
    else:
        bucket, name = split_gs(data.where)
        text = client.bucket(bucket).blob(name).download_as_text()
        source = data.where
    items = manifests.parse(text, source, "DATA")
    chosen = next((i for i in items if i.ml_use == "test"), None) or next(
        (i for i in items if i.ml_use == "validation"), None)
    if chosen is None:
        raise TrainerError(f"{source} labels no item test or validation (ml_use): give "
                           "--predict-image FILE for the smoke prediction")
    bucket, name = split_gs(chosen.uri)
    local = where.local_dir / "held-back" / Path(name).name
    local.parent.mkdir(parents=True, exist_ok=True)
    client.bucket(bucket).blob(name).download_to_filename(str(local))
    return HeldBack(str(local), chosen.label)


def run_on_vertex(args: argparse.Namespace, plan: plans.Plan, data: Data, where: Layout,
                  image: HeldBack) -> None:
    run_commands(plan, data, where, args.eval_fraction)
    print("== train", flush=True)
    if submit.submit(plan.get("train"), args.project, args.region, args.poll_secs, True):
        raise TrainerError("the training job did not succeed (its state above)")
    if image.path is None:
        image = held_out_on_gcs(where, data)
        request = plan.get("rawPredict")
        body = base64.b64encode(deploy.image_body([image.path])).decode()
        plan.requests[plan.requests.index(request)] = plans.Request(
            request.step, request.type_name, {**request.body, "httpBody": {
                **request.body["httpBody"], "data": body}})
    print("== register, deploy and predict", flush=True)
    requests = {r.step: r.body for r in plan.requests if r.step != "train"}
    endpoint = deploy.deploy(deploy.validate(requests), args.region, 60 * args.timeout_minutes)
    request_file = where.local_dir / "request.json"
    request_file.write_bytes(base64.b64decode(plan.get("rawPredict").body["httpBody"]["data"]))
    print(f"endpoint: {endpoint}")
    print("curl -X POST -H \"Authorization: Bearer $(gcloud auth print-access-token)\" "
          "-H 'Content-Type: application/json' "
          f"https://{args.region}-aiplatform.googleapis.com/v1/{endpoint}:rawPredict "
          f"-d @{request_file}")


# --- the command ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="vertex-trainer launch", allow_abbrev=False,
                      usage="%(prog)s DATA [--local | --dry-run] [options] [-- TRAINER_FLAGS...]",
                      description=__doc__.split("\n\n")[0])
    p.add_argument("data", metavar="DATA",
                   help="photo folder ROOT/CLASS/x.jpg, CSV/JSONL manifest (local or gs://), or "
                        "a Vertex managed image dataset (ID or resource name)")
    p.add_argument("--local", action="store_true",
                   help="run the whole chain on this machine (docker)")
    add_dry_run(p, "the checked plan (commands, requests, prerequisites)")
    add_location(p, "required on Vertex unless --dry-run")
    p.add_argument("--display-name", default="vertex-trainer", help="of the job, model, endpoint")
    p.add_argument("--bucket", metavar="gs://BUCKET[/PREFIX]",
                   help="Vertex: where the prepared data (data/), each run's outputs "
                        "(runs/NAME/: checkpoints, logs, model) go")
    p.add_argument("--output-dir", default="launch-output",
                   help="this machine's files: --local's data and runs, each run's request.json")
    p.add_argument("--eval-fraction", type=float,
                   help="local photos without split folders: the share held out for "
                        "evaluation (and the smoke prediction's image); default 0.1")
    p.add_argument("--predict-image", metavar="FILE",
                   help="classify this PNG/JPEG after deploying (default: a held-back image)")
    p.add_argument("--tune", metavar="CONFIG",
                   help="run this tuning study here first (vertex-trainer tune) and train with "
                        "its best trial's parameters")
    build = p.add_argument_group("images")
    build.add_argument("--build", choices=("cloud", "local"), default="cloud",
                       help="Vertex: build and push our images with Cloud Build or with docker "
                            "here")
    build.add_argument("--training-image", help="run this training image instead of building one")
    build.add_argument("--serving-image", help="serve with this image (with --training-image)")
    build.add_argument("--base-image", metavar="IMAGE|debian",
                       help="--local: base of both images (default: the Dockerfiles' Python image "
                            "from Docker Hub; `debian`: one built from Debian's mirror)")
    build.add_argument("--no-container", action="store_true",
                       help="--local: train as a process of this Python instead of in our image")
    job = p.add_argument_group("Vertex resources")
    job.add_argument("--machine-type", default=submit.DEFAULT_MACHINE, help="training")
    job.add_argument("--accelerator-type", help="training, e.g. NVIDIA_TESLA_T4")
    job.add_argument("--accelerator-count", type=int, default=1)
    job.add_argument("--serving-machine-type", default="n1-standard-2")
    job.add_argument("--timeout", help="of the training job, e.g. 2h")
    job.add_argument("--timeout-minutes", type=int, default=60,
                     help="for each deployment step (upload, endpoint, deployment)")
    submit.add_follow_flags(job, optional=False)  # launch follows: its next steps need the model
    here = p.add_argument_group("--local serving")
    here.add_argument("--port", type=int, help="of the local endpoint (default: a free one)")
    here.add_argument("--stop", action="store_true",
                      help="stop the local endpoint after the smoke prediction (default: it "
                           "keeps serving)")
    return p


def check_args(args: argparse.Namespace, data: Data, trainer_args: list[str]) -> None:
    given = checks.trainer_flags(trainer_args)
    named = [f"--{n.replace('_', '-')}" for n in DATA_FLAGS if getattr(given, n)]
    if named:
        raise TrainerError(f"trainer flags after --: DATA gives the data; drop {named[0]}")
    if args.eval_fraction is not None and not 0.0 < args.eval_fraction < 1.0:
        raise TrainerError(f"--eval-fraction must be in (0, 1), got {args.eval_fraction}")
    if bool(args.training_image) != bool(args.serving_image):
        raise TrainerError("--training-image and --serving-image go together")
    if args.local:
        if data.remote:
            raise TrainerError(f"--local trains on this machine's files: DATA {data.where} "
                               "lives on Google Cloud (give a local folder or manifest)")
        return
    for flag in ("no_container", "base_image", "port", "stop"):
        if getattr(args, flag):
            raise TrainerError(f"--{flag.replace('_', '-')} is for --local runs")
    if not (args.dry_run or args.project):
        raise TrainerError("--project is required to launch on Vertex (or use --local or "
                           "--dry-run)")
    if not args.bucket:
        raise TrainerError("--bucket is missing: a Vertex run keeps its data, checkpoints and "
                           "export in gs:// (without it they would be lost with the job's "
                           "machines); give --bucket gs://BUCKET/PREFIX")
    if not args.bucket.startswith("gs://"):
        raise TrainerError(f"--bucket must be gs://BUCKET[/PREFIX], got {args.bucket!r}")
    if data.kind == "folder" and data.remote and not args.predict_image:
        raise TrainerError(f"DATA {data.where} is a gs:// folder, which holds out no image for "
                           "the smoke prediction: give --predict-image FILE (or a manifest "
                           "whose items say their ml_use)")
    if args.tune:
        raise TrainerError("--tune runs its study on this machine: use it with --local (for a "
                           "Vertex study: vertex-trainer tune-submit, then launch with the best "
                           "trial's flags)")


def main(argv=None) -> int:
    def body():
        with usage_errors():
            args, trainer_args = parse_command(build_parser(), argv)
            data = classify(args.data)
            check_args(args, data, trainer_args)
            if args.predict_image:
                deploy.image_body([args.predict_image])  # readable, an image, not too big
        if args.local and not args.dry_run:
            require_docker("run on Vertex AI (drop --local)")
        elif args.build == "local" and not (args.training_image or args.dry_run):
            require_docker("build with Cloud Build (--build cloud)")
        image = HeldBack(args.predict_image) if args.predict_image else \
            held_back(data, args.eval_fraction)
        run_name = f"{args.display_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        where = layout(args, data, run_name)
        tag = submit.source_tag()
        base_image = args.base_image
        if base_image == DEBIAN_BASE and args.dry_run:
            base_image = "$(python -m trainer.containers.base_image)"
        elif base_image == DEBIAN_BASE:
            from trainer.containers.base_image import ensure_base_image

            base_image = ensure_base_image(log=lambda line: print(line, file=sys.stderr))
        session = None if args.local or args.dry_run else checks.session_if_credentials()
        with usage_errors():
            plan = build_plan(args, data, trainer_args, where, image, tag, base_image, session)
        if args.dry_run:
            print(plans.render(plan))
            return 0
        # Before this run's local folder exists: a run stopped here leaves nothing behind.
        checks.verify(plan.prerequisites)
        where.local_dir.mkdir(parents=True, exist_ok=True)
        if args.tune:
            if where.data_dir:
                prepare(data, where, args.eval_fraction)
            best = tune(args, data, where, trainer_args)
            with usage_errors():
                plan = build_plan(args, data, [*trainer_args, *best], where, image, tag,
                                  base_image, session)
            plan.commands = [c for c in plan.commands if c[0] != "prepare"]
        if args.local:
            from trainer.tools.local_cluster import free_ports

            port = args.port or free_ports(1)[0]
            plan = _with_port(plan, port)
            run_here(args, plan, data, where, image, port)
        else:
            run_on_vertex(args, plan, data, where, image)

    return run_cli(body)


def _with_port(plan: plans.Plan, port: int) -> plans.Plan:
    """The local plan serves on the host network, where the container's port is the host's: a
    free one instead of Vertex's 8080."""
    upload = plan.get("uploadModel")
    spec = {**upload.body["model"]["containerSpec"], "ports": [{"containerPort": port}]}
    body = {**upload.body, "model": {**upload.body["model"], "containerSpec": spec}}
    plan.requests[plan.requests.index(upload)] = plans.Request(upload.step, upload.type_name, body)
    plans.check(plan)
    return plan


if __name__ == "__main__":
    sys.exit(main())
