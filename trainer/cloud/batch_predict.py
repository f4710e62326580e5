"""Predict a whole dataset offline: a Vertex BatchPredictionJob on our serving image, or --local.

    vertex-trainer batch-predict gs://B/images.txt --artifact-uri gs://B/runs/1/model \
        --output-dir gs://B/predictions --project P
    vertex-trainer batch-predict gs://B/instances.jsonl --model 123 --output-dir gs://B/out
    vertex-trainer batch-predict images.txt --artifact-uri trainer-output/export/17000 --local

INPUT is a file list (one gs:// image URI per line: Vertex sends each file as {"b64": ...}, which
our server gives the `encoded_image` signature) or JSONL (one instance per line, for
--signature, default serving_default). The model is an uploaded one (--model) or an export
(--artifact-uri), first registered on our serving image. Vertex writes JSONL predictions under
--output-dir. Every request is checked with the aiplatform SDK's types first; --dry-run prints
them. --local rehearses the job here on a file list of local images (or image paths) and a local
export: our server's prediction writes, under --output-dir, the directory and JSONL files the job
writes (trainer/cloud/batch_local.py), and `vertex-trainer predict` adds its lines and PNGs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from trainer.cli import OneLineParser, add_dry_run, add_location, run_cli, usage_errors
from trainer.cloud import checks, deploy, plans, submit
from trainer.errors import TrainerError

FORMATS = {".jsonl": "jsonl", ".txt": "file-list", ".csv": "file-list"}
_MODEL = re.compile(r"^(\d+|projects/[^/]+/locations/[^/]+/models/[^/]+)$")


def instances_format(args: argparse.Namespace) -> str:
    if args.instances_format:
        return args.instances_format
    found = FORMATS.get(Path(args.input[0]).suffix.lower())
    if found is None:
        raise TrainerError(f"INPUT {args.input[0]}: cannot tell its format from the suffix; "
                           "give --instances-format jsonl or file-list")
    return found


def check_batch_size(args: argparse.Namespace) -> None:
    if not 1 <= args.batch_size <= 256:
        raise TrainerError(f"--batch-size must be in [1, 256] (the server's --max-instances), "
                           f"got {args.batch_size}")


def signature_of(args: argparse.Namespace, fmt: str) -> str:
    """The signature the job's modelParameters name; "" for the server's default."""
    return args.signature or ("encoded_image" if fmt == "file-list" else "")


def model_parameters(signature: str) -> dict | None:
    # Vertex forwards modelParameters as each request's "parameters"; our server reads the
    # signature from there.
    return {"signature_name": signature} if signature else None


def build_requests(args: argparse.Namespace) -> list[plans.Request]:
    """UploadModelRequest (with --artifact-uri), then the BatchPredictionJob; pure."""
    if bool(args.model) == bool(args.artifact_uri):
        raise TrainerError("give the model as --model (uploaded) or --artifact-uri (an export), "
                           "one of them")
    if args.model and not _MODEL.match(args.model):
        raise TrainerError("--model must be a model ID or projects/P/locations/R/models/ID, "
                           f"got {args.model!r}")
    for path in args.input:
        if not path.startswith("gs://"):
            raise TrainerError(f"INPUT {path} is a path on this machine; a batch prediction "
                               "job reads gs:// (or use --local)")
    if not args.output_dir.startswith("gs://"):
        raise TrainerError(f"--output-dir must be a gs:// path, got {args.output_dir!r}")
    if args.replicas < 1 or args.max_replicas < args.replicas:
        raise TrainerError(f"--replicas ({args.replicas}) must be >= 1 and <= --max-replicas "
                           f"({args.max_replicas})")
    check_batch_size(args)
    fmt = instances_format(args)
    signature = signature_of(args, fmt)
    location = plans.location(args.project, args.region)
    requests = []
    if args.artifact_uri:
        argv = ["--artifact-uri", args.artifact_uri, "--region", args.region, "--display-name",
                args.display_name]
        argv += ["--project", args.project] if args.project else []
        argv += ["--container-image-uri", args.container_image_uri] \
            if args.container_image_uri else []
        upload = deploy.build_requests(deploy.build_parser().parse_args(argv))["uploadModel"]
        requests.append(plans.Request("uploadModel", "UploadModelRequest", upload))
        model = f"{location}/models/{plans.MODEL_PLACEHOLDER}"
    else:
        model = args.model if "/" in args.model else f"{location}/models/{args.model}"
    job = {"displayName": args.display_name, "model": model,
           "inputConfig": {"instancesFormat": fmt, "gcsSource": {"uris": list(args.input)}},
           "outputConfig": {"predictionsFormat": "jsonl",
                            "gcsDestination": {"outputUriPrefix": args.output_dir}},
           "dedicatedResources": {"machineSpec": {"machineType": args.machine_type},
                                  "startingReplicaCount": args.replicas,
                                  "maxReplicaCount": args.max_replicas},
           # Requests stay within the server's per-request limits (instances and bytes).
           "manualBatchTuningParameters": {"batchSize": args.batch_size}}
    if signature:
        job["modelParameters"] = model_parameters(signature)
    requests.append(plans.Request("batchPredictionJob", "BatchPredictionJob", job))
    for request in requests:
        request.message()
    return requests


def run_on_vertex(requests: list[plans.Request], args: argparse.Namespace) -> int:
    from google.cloud import aiplatform_v1

    job = requests[-1]
    if requests[0].step == "uploadModel":
        models = aiplatform_v1.ModelServiceClient(
            client_options={"api_endpoint": f"{args.region}-aiplatform.googleapis.com"})
        model = models.upload_model(request=requests[0].message()).result(
            60 * args.timeout_minutes).model
        print(f"uploaded {model}", flush=True)
        job = plans.Request(job.step, job.type_name, {**job.body, "model": model})
    return submit.submit(job, args.project, args.region, args.poll_secs, not args.no_follow)


def local_files(args: argparse.Namespace) -> list[str]:
    """The images --local predicts: the lines of each file list, or the paths given."""
    if args.instances_format == "jsonl" or any(p.lower().endswith(".jsonl") for p in args.input):
        raise TrainerError("--local runs a file list of images; JSONL instances run on Vertex "
                           "(drop --local)")
    if not args.artifact_uri:
        raise TrainerError("--local needs the export as --artifact-uri DIR")
    check_batch_size(args)
    files = []
    for path in args.input:
        if path.lower().endswith(tuple(FORMATS)):
            try:
                files += [line.strip() for line in Path(path).read_text().splitlines()
                          if line.strip()]
            except OSError as err:
                raise TrainerError(f"INPUT: cannot read {path} ({err.strerror})") from None
        else:
            files.append(path)
    if not files:
        raise TrainerError(f"INPUT {' '.join(args.input)} lists no image")
    return files


def run_here(args: argparse.Namespace, files: list[str]) -> int:
    """The job's output files from our server's prediction, then predict's lines and PNGs."""
    from trainer import predict
    from trainer.cloud import batch_local
    from trainer.serving import files as model_files
    from trainer.storage import join

    if not model_files.exists(join(args.artifact_uri, "saved_model.pb")):
        raise TrainerError(f"--artifact-uri: {args.artifact_uri} holds no saved_model.pb; "
                           "expected an export written by trainer.task")
    outcome = batch_local.run(files, args.artifact_uri, args.output_dir, args.display_name,
                              args.batch_size,
                              model_parameters(signature_of(args, "file-list")))
    print(f"wrote {join(outcome.directory, batch_local.RESULTS_FILE)}: "
          f"{len(outcome.predicted)} predictions", flush=True)
    if outcome.predicted:
        predict.run(predict.build_parser().parse_args(
            ["--model-dir", args.artifact_uri, "--output-dir", args.output_dir,
             "--batch-size", str(args.batch_size), *outcome.predicted]))
    if not outcome.failed:
        return 0
    errors = join(outcome.directory, batch_local.ERRORS_FILE)
    for message, paths in outcome.failed.items():
        print(f"failed: {message}")
        print("".join(f"  {path}\n" for path in paths), end="")
    count = sum(len(paths) for paths in outcome.failed.values())
    raise TrainerError(f"{count} of {len(files)} instances failed (a request the server "
                       f"refuses fails all its --batch-size instances); see {errors}")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="vertex-trainer batch-predict", allow_abbrev=False,
                      description=__doc__.split("\n\n")[0])
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="gs:// file list (.txt: one image URI per line) or JSONL of instances")
    p.add_argument("--output-dir", required=True,
                   help="gs:// prefix of the predictions (--local: a local folder)")
    p.add_argument("--model", help="an uploaded model: ID or projects/P/locations/R/models/ID")
    p.add_argument("--artifact-uri",
                   help="an export (gs://; --local: a local folder) to register first")
    p.add_argument("--container-image-uri",
                   help="serving image for --artifact-uri (default: ours, "
                        + deploy.OUR_IMAGE.format(project="PROJECT") + ")")
    p.add_argument("--instances-format", choices=("jsonl", "file-list"),
                   help="default: from INPUT's suffix (.jsonl; .txt/.csv: file-list)")
    p.add_argument("--signature", help="signature to call (default: encoded_image for a file "
                                       "list, serving_default for JSONL)")
    add_location(p, "required unless --dry-run or --local")
    p.add_argument("--display-name", default="vertex-trainer-batch",
                   help="of the job and the registered model; --local names its output "
                        "directory prediction-NAME-TIME after it, as the job does")
    p.add_argument("--machine-type", default="n1-standard-4")
    p.add_argument("--replicas", type=int, default=1, help="starting replica count")
    p.add_argument("--max-replicas", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32,
                   help="instances per request to the server")
    p.add_argument("--timeout-minutes", type=int, default=60, help="for the model upload")
    submit.add_follow_flags(p)
    mode = p.add_mutually_exclusive_group()
    add_dry_run(mode, "the checked requests and the prerequisites")
    mode.add_argument("--local", action="store_true",
                      help="rehearse the job here (a file list of local images and a local "
                           "export): the job's output files under --output-dir, from our "
                           "server's prediction, and `vertex-trainer predict`'s PNGs")
    return p


def main(argv=None) -> int:
    def body():
        with usage_errors():
            args = build_parser().parse_args(argv)
            if args.local:
                files = local_files(args)
            elif not (args.dry_run or args.project):
                raise TrainerError("--project is required (or use --dry-run or --local)")
            else:
                requests = build_requests(args)
        if args.local:
            return run_here(args, files)
        image = requests[0].body["model"]["containerSpec"]["imageUri"] \
            if requests[0].step == "uploadModel" else None

        def prerequisites(session=None):
            return checks.prerequisites(args.project, images=[image] if image else [],
                                        buckets=[args.output_dir, *args.input], session=session)

        if args.dry_run:
            print(plans.render(plans.Plan(requests=requests, prerequisites=prerequisites())))
            return 0
        checks.verify(prerequisites(checks.session_if_credentials()))
        return run_on_vertex(requests, args)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
