"""Request plans: each Vertex step as the REST/JSON request it sends, checked with the SDK's types.

A plan is built in pure Python from flags, before anything runs; `check` parses every request
into its `google.cloud.aiplatform_v1` type (unknown or mistyped fields fail, as Vertex would
refuse them), and `render` prints the chain for a dry-run. Executors (Vertex, or this machine in
`launch --local`) then run the same requests. Names a step creates (a model, an endpoint) are
unknown until it ran: the plan holds placeholders, and each executor fills in the real names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trainer.errors import TrainerError

# The TrainingPipeline schema of a custom job; its trainingTaskInputs is a CustomJobSpec.
CUSTOM_TASK = "gs://google-cloud-aiplatform/schema/trainingjob/definition/custom_task_1.0.0.yaml"
# Which annotations a managed dataset exports to the job (Vertex refuses a custom training
# pipeline on a managed dataset without one): single-label image classification.
IMAGE_CLASSIFICATION_ANNOTATION = (
    "gs://google-cloud-aiplatform/schema/dataset/annotation/image_classification_1.0.0.yaml")
MODEL_PLACEHOLDER = "MODEL_ID"
ENDPOINT_PLACEHOLDER = "ENDPOINT_ID"
PROJECT_PLACEHOLDER = "PROJECT"


@dataclass(frozen=True)
class Request:
    """One request of a plan: `step` names it in the output, `type_name` is its SDK type."""

    step: str
    type_name: str
    body: dict
    note: str = ""  # one line for the dry-run: what happens around the request

    def message(self):
        """The body parsed into its aiplatform_v1 type; a TrainerError naming it when invalid."""
        from google.cloud.aiplatform_v1 import types
        from google.protobuf import json_format

        message_type = getattr(types, self.type_name)
        try:
            message = message_type.from_json(json.dumps(self.body))
            if self.type_name == "TrainingPipeline":
                # Its task inputs are a Struct to the type; to Vertex they are a CustomJobSpec.
                types.CustomJobSpec.from_json(json.dumps(self.body["trainingTaskInputs"]))
        except (json_format.ParseError, ValueError, KeyError) as err:
            raise TrainerError(f"the {self.type_name} is invalid: "
                               f"{' '.join(str(err).split())}") from None
        return message


@dataclass
class Plan:
    """The requests in the order they are sent, with the commands run before them (prepare,
    build, push) and what must exist first."""

    requests: list[Request] = field(default_factory=list)
    commands: list[tuple[str, list[str]]] = field(default_factory=list)  # (step, argv)
    prerequisites: list = field(default_factory=list)  # trainer.cloud.checks.Prerequisite

    def get(self, step: str) -> Request | None:
        return next((r for r in self.requests if r.step == step), None)


def check(plan: Plan) -> dict:
    """Every request parsed into its SDK type: {step: message}."""
    return {request.step: request.message() for request in plan.requests}


def render(plan: Plan) -> str:
    """The dry-run's text: the commands, each request as JSON under a `# N. step (Type)` line,
    then the prerequisites."""
    lines = []
    number = 0
    for step, argv in plan.commands:
        number += 1
        lines.append(f"# {number}. {step}: command\n{' '.join(argv)}")
    for request in plan.requests:
        number += 1
        note = f"\n# {request.note}" if request.note else ""
        lines.append(f"# {number}. {request.step} (aiplatform_v1.{request.type_name}){note}\n"
                     f"{json.dumps(request.body, indent=2)}")
    if plan.prerequisites:
        lines.append("# prerequisites (each with the command that creates it)\n"
                     + "\n".join(f"- {p.line()}" for p in plan.prerequisites))
    return "\n\n".join(lines)


def location(project: str | None, region: str) -> str:
    return f"projects/{project or PROJECT_PLACEHOLDER}/locations/{region}"


def training_pipeline(display_name: str, job_spec: dict, dataset: str,
                      export_prefix: str) -> dict:
    """A custom-task TrainingPipeline over a managed dataset: Vertex exports the dataset's splits
    as JSONL under `export_prefix` and hands them to the job as AIP_DATA_FORMAT and
    AIP_{TRAINING,VALIDATION,TEST}_DATA_URI."""
    return {"displayName": display_name, "trainingTaskDefinition": CUSTOM_TASK,
            "trainingTaskInputs": job_spec,
            "inputDataConfig": {"datasetId": dataset,
                                "annotationSchemaUri": IMAGE_CLASSIFICATION_ANNOTATION,
                                "gcsDestination": {"outputUriPrefix": export_prefix}}}
