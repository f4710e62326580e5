"""Upload an exported model to Vertex AI, deploy it to an endpoint and send it a prediction.

    vertex-trainer deploy --project P --region us-central1 \
        --artifact-uri gs://B/runs/cnn-1/model --predict-image digit.png

Uploads the SavedModel to the Model Registry on our serving image (serving.Dockerfile, pushed by
cloudbuild.yaml; or --container-image-uri), or, with --prebuilt-image, on Vertex's prebuilt TF
2.15 prediction image (legacy: it ends 2027-01-14, and warns past that); deploys it to a new
endpoint (or --endpoint); then sends --predict-json (a `{"instances": [...], "parameters":
{...}}` body, through `predict`) or --predict-image files (through `rawPredict`, with a TF
Serving body naming the `encoded_image` signature, which both images honour). Each request is
checked with the aiplatform SDK's own type first; --dry-run prints them and the prerequisites and
sends nothing; a real run checks the prerequisites (credentials, the image's repository, the
bucket of --artifact-uri; trainer.cloud.checks) before its first request.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from datetime import date
from pathlib import Path


from trainer.cloud import checks, plans
from trainer.cloud.prebuilt import PREDICTION_CPU, PREDICTION_GPU, past_end_warning
from trainer.cli import OneLineParser, add_dry_run, add_location, run_cli, usage_errors
from trainer.errors import TrainerError

# Where cloudbuild.yaml pushes our serving image (its _SERVING_IMAGE substitution).
OUR_IMAGE = "us-docker.pkg.dev/{project}/vertex-trainer/serving:latest"
SERVING_PORT = 8080
PREDICT_ROUTE = "/predict"
HEALTH_ROUTE = "/health"
MAX_REQUEST_BYTES = 1_500_000  # shared public endpoints' cap
_ENDPOINT = re.compile(r"^(\d+|projects/[^/]+/locations/[^/]+/endpoints/\d+)$")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
# (key in the dry-run output, the SDK type that checks it)
REQUEST_TYPES = {"uploadModel": "UploadModelRequest", "createEndpoint": "CreateEndpointRequest",
                 "deployModel": "DeployModelRequest", "predict": "PredictRequest",
                 "rawPredict": "RawPredictRequest"}


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TrainerError(f"{flag}: cannot read {path} ({err.strerror or err})") from None


def _check_size(body: bytes, flag: str) -> None:
    if len(body) > MAX_REQUEST_BYTES:
        raise TrainerError(f"{flag}: the request body is {len(body):,} bytes; Vertex's shared "
                           f"public endpoints take at most {MAX_REQUEST_BYTES:,}")


def predict_json_body(path: str) -> dict:
    try:
        body = json.loads(_read(path, "--predict-json"))
    except ValueError as err:
        raise TrainerError(f"--predict-json: {path} is not JSON ({err})") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) \
            or not body["instances"] or set(body) - {"instances", "parameters"}:
        raise TrainerError(f'--predict-json: {path} must hold {{"instances": [...]}} with at '
                           'least one instance, and optionally "parameters" (what Vertex\'s '
                           "predict carries)")
    _check_size(json.dumps(body).encode(), "--predict-json")
    return body


def image_body(paths: list[str]) -> bytes:
    """A TF Serving body for the `encoded_image` signature, one instance per image."""
    instances = []
    for path in paths:
        data = _read(path, "--predict-image")
        if not data.startswith(_IMAGE_MAGIC):
            raise TrainerError(f"--predict-image: {path} is not a PNG or JPEG file")
        instances.append({"image_bytes": {"b64": base64.b64encode(data).decode()}})
    body = json.dumps({"signature_name": "encoded_image", "instances": instances}).encode()
    _check_size(body, "--predict-image")
    return body


def build_requests(args: argparse.Namespace, on_vertex: bool = True) -> dict:
    """The REST/JSON requests, in the order they are sent; pure, no network. `on_vertex=False`:
    the plan `launch --local` serves on this machine, whose model is a local directory."""
    if on_vertex and not args.artifact_uri.startswith("gs://"):
        raise TrainerError(f"--artifact-uri must be a gs:// directory holding the SavedModel, "
                           f"got {args.artifact_uri!r}")
    if args.min_replicas < 1:
        raise TrainerError(f"--min-replicas must be >= 1, got {args.min_replicas}")
    if args.max_replicas < args.min_replicas:
        raise TrainerError(f"--max-replicas ({args.max_replicas}) must be >= --min-replicas "
                           f"({args.min_replicas})")
    if bool(args.accelerator_type) != bool(args.accelerator_count):
        raise TrainerError("--accelerator-type and --accelerator-count go together")
    if args.endpoint and not _ENDPOINT.match(args.endpoint):
        raise TrainerError("--endpoint must be an endpoint ID or projects/P/locations/R/"
                           f"endpoints/ID, got {args.endpoint!r}")
    if args.predict_json and args.predict_image:
        raise TrainerError("give --predict-json or --predict-image, not both")

    if args.prebuilt_image and args.container_image_uri:
        raise TrainerError("give --container-image-uri or --prebuilt-image, not both")
    if args.accelerator_type and not (args.prebuilt_image or args.container_image_uri):
        raise TrainerError("our default serving image is built without CUDA: for "
                           "--accelerator-type build one with --build-arg TENSORFLOW="
                           "'tensorflow[and-cuda]==2.21.0' and give it as --container-image-uri")
    project = args.project or plans.PROJECT_PLACEHOLDER
    location = plans.location(args.project, args.region)
    if args.prebuilt_image:
        container = {"imageUri": PREDICTION_GPU if args.accelerator_type else PREDICTION_CPU}
    else:
        container = {"imageUri": args.container_image_uri or OUR_IMAGE.format(project=project),
                     "predictRoute": PREDICT_ROUTE, "healthRoute": HEALTH_ROUTE,
                     "ports": [{"containerPort": SERVING_PORT}]}
    requests = {"uploadModel": {"parent": location, "model": {
        "displayName": args.display_name, "artifactUri": args.artifact_uri.rstrip("/"),
        "containerSpec": container}}}
    if args.endpoint:
        endpoint = (args.endpoint if "/" in args.endpoint
                    else f"{location}/endpoints/{args.endpoint}")
    else:
        endpoint = f"{location}/endpoints/{plans.ENDPOINT_PLACEHOLDER}"  # known once created
        requests["createEndpoint"] = {"parent": location,
                                      "endpoint": {"displayName": args.display_name}}
    machine = {"machineType": args.machine_type}
    if args.accelerator_type:
        machine.update(acceleratorType=args.accelerator_type,
                       acceleratorCount=args.accelerator_count)
    deployed = {"model": f"{location}/models/{plans.MODEL_PLACEHOLDER}",  # known once uploaded
                "displayName": args.display_name,
                "dedicatedResources": {"machineSpec": machine,
                                       "minReplicaCount": args.min_replicas,
                                       "maxReplicaCount": args.max_replicas}}
    if args.service_account:
        deployed["serviceAccount"] = args.service_account
    # "0" is the model being deployed: it takes all the traffic.
    requests["deployModel"] = {"endpoint": endpoint, "deployedModel": deployed,
                               "trafficSplit": {"0": 100}}
    if args.predict_json:
        requests["predict"] = {"endpoint": endpoint, **predict_json_body(args.predict_json)}
    if args.predict_image:
        requests["rawPredict"] = {"endpoint": endpoint, "httpBody": {
            "contentType": "application/json",
            "data": base64.b64encode(image_body(args.predict_image)).decode()}}
    return requests


def as_plan(requests: dict) -> list[plans.Request]:
    return [plans.Request(key, REQUEST_TYPES[key], body) for key, body in requests.items()]


def validate(requests: dict) -> dict:
    """Each request parsed into its SDK type; unknown or mistyped fields fail."""
    return {request.step: request.message() for request in as_plan(requests)}


def deploy(messages: dict, region: str, timeout_secs: int) -> str:
    """Sends the requests in order, filling in the names each step creates; returns the
    endpoint's name."""
    from google.cloud import aiplatform_v1

    options = {"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    models = aiplatform_v1.ModelServiceClient(client_options=options)
    endpoints = aiplatform_v1.EndpointServiceClient(client_options=options)
    model = models.upload_model(request=messages["uploadModel"]).result(timeout_secs).model
    print(f"uploaded {model}", flush=True)
    deploy_request = messages["deployModel"]
    if "createEndpoint" in messages:
        deploy_request.endpoint = endpoints.create_endpoint(
            request=messages["createEndpoint"]).result(timeout_secs).name
        print(f"created {deploy_request.endpoint}", flush=True)
    deploy_request.deployed_model.model = model
    print("deploying (new nodes take 10-30 minutes)...", flush=True)
    deployed = endpoints.deploy_model(request=deploy_request).result(timeout_secs).deployed_model
    print(f"deployed model {deployed.id} to {deploy_request.endpoint}", flush=True)
    predictions = aiplatform_v1.PredictionServiceClient(client_options=options)
    if "predict" in messages:
        request = messages["predict"]
        request.endpoint = deploy_request.endpoint
        response = predictions.predict(request=request)
        print(type(response).to_json(response))
    if "rawPredict" in messages:
        request = messages["rawPredict"]
        request.endpoint = deploy_request.endpoint
        print(predictions.raw_predict(request=request).data.decode())
    return deploy_request.endpoint


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="vertex-trainer deploy", allow_abbrev=False,
                       description=__doc__.split("\n\n")[0])
    add_location(p, "required unless --dry-run")
    p.add_argument("--artifact-uri", required=True,
                   help="gs:// directory of the SavedModel (trainer.task's AIP_MODEL_DIR)")
    p.add_argument("--display-name", default="vertex-trainer", help="of the model and endpoint")
    p.add_argument("--container-image-uri",
                   help="our serving image (serving.Dockerfile); default: what cloudbuild.yaml "
                        "pushes, " + OUR_IMAGE.format(project="PROJECT"))
    p.add_argument("--prebuilt-image", action="store_true",
                   help=f"legacy: Vertex's {PREDICTION_CPU} (tf2-gpu with --accelerator-type), "
                        "available until 2027-01-14")
    p.add_argument("--endpoint", help="deploy to this endpoint (ID or name) instead of a new one")
    p.add_argument("--machine-type", default="n1-standard-2")
    p.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4")
    p.add_argument("--accelerator-count", type=int)
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=1)
    p.add_argument("--service-account", help="the deployed model runs as this account")
    p.add_argument("--predict-json", metavar="FILE",
                   help='a {"instances": [...]} body to send with predict once deployed')
    p.add_argument("--predict-image", metavar="FILE", action="append",
                   help="a PNG/JPEG to classify with rawPredict once deployed (repeatable)")
    p.add_argument("--timeout-minutes", type=int, default=60,
                   help="for each long-running step (upload, endpoint, deployment)")
    add_dry_run(p, "the checked requests and the prerequisites")
    return p


def main(argv=None) -> int:
    def body():
        with usage_errors():
            args = build_parser().parse_args(argv)
            if args.timeout_minutes <= 0:
                raise TrainerError(f"--timeout-minutes must be positive, got "
                                   f"{args.timeout_minutes}")
            if not (args.dry_run or args.project):
                raise TrainerError("--project is required to deploy (or use --dry-run)")
            requests = build_requests(args)
            messages = validate(requests)
        image = requests["uploadModel"]["model"]["containerSpec"]["imageUri"]
        warning = past_end_warning(image, date.today(),
                                   "serve with our image instead (drop --prebuilt-image)")
        if warning:
            print(warning, file=sys.stderr)

        def prerequisites(session=None):
            # A prebuilt image lives in Vertex's own repository, not one of the project's.
            return checks.prerequisites(args.project, images=[] if args.prebuilt_image
                                        else [image], buckets=[args.artifact_uri],
                                        session=session)

        if args.dry_run:
            print(plans.render(plans.Plan(requests=as_plan(requests),
                                          prerequisites=prerequisites())))
            return 0
        checks.verify(prerequisites(checks.session_if_credentials()))
        deploy(messages, args.region, 60 * args.timeout_minutes)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
