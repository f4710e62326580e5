"""`vertex-trainer tune-submit CONFIG --project P [options] [--dry-run] [-- TRAINER_FLAGS]`

Turns a tuning config into a Vertex AI HyperparameterTuningJob and creates it. The job is the
config itself, parsed and validated with the SDK's protobuf type (hptuning.spec), with its
placeholders filled in, the trainer flags after `--` appended to its trainer args (checked by
the trainer's own parser; their paths must be on Cloud Storage), --max-trials and
--parallel-trials in place of its counts, and --display-name added; --dry-run prints it as the
JSON of the request body and stops, offline. (`python -m hptuning.submit` is the same command.)

It goes through the SDK's generated client (`aiplatform.gapic.JobServiceClient`), as Vertex's
own samples and `gcloud ai hp-tuning-jobs create --config` send it, rather than through the
high-level `aiplatform.HyperparameterTuningJob`: that class rebuilds the spec from its own
arguments, so it cannot carry a parameterId that repeats under disjoint parent values (its
conditional parameters are a dict) nor every CustomJobSpec field, and its `run(sync=False)`
still keeps the interpreter alive until the job ends. Creating the job returns at once with
its resource name.
"""

from __future__ import annotations

import copy
import datetime
import sys
from pathlib import Path
from typing import Sequence

from google.cloud.aiplatform_v1.types import HyperparameterTuningJob
from google.protobuf import json_format

from hptuning import cli, flags, spec
from trainer.cloud import checks
from trainer.cloud.prebuilt import past_end_warning
from trainer.cli import (OneLineParser, add_dry_run, add_location, run_cli,
                         parse_command, usage_errors)
from trainer.errors import TrainerError


def request_job(tuning: spec.TuningSpec, display_name: str | None,
                today: datetime.date) -> HyperparameterTuningJob:
    """The job to create: the config with a display name, checked for what Vertex requires of
    a trial job beyond what the local tuner needs (a warning, on stderr, for a prebuilt image
    past its end of availability)."""
    job = copy.deepcopy(tuning.job)
    job.display_name = display_name or job.display_name or (
        f"{Path(tuning.source).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    source = tuning.source
    prebuilt: set[str] = set()
    for index, pool in enumerate(job.trial_job_spec.worker_pool_specs):
        field = f"trialJobSpec.workerPoolSpecs[{index}]"
        if index and not pool.replica_count:
            continue  # an empty placeholder pool, as Vertex allows
        if not pool.machine_spec.machine_type:
            raise spec.error(source, f"{field}.machineSpec.machineType", "is required")
        if pool.replica_count < 1:
            raise spec.error(source, f"{field}.replicaCount", "must be at least 1")
        which = spec.code_spec(pool)
        if which is None:
            raise spec.error(source, field, "needs containerSpec (our training image) or "
                                            f"pythonPackageSpec: every replica runs "
                                            f"{spec.TRAINER_MODULE}")
        if which == "container_spec":
            if not pool.container_spec.image_uri:
                raise spec.error(source, f"{field}.containerSpec.imageUri",
                                 "is required: our training image, as cloudbuild.yaml pushes "
                                 "it (us-docker.pkg.dev/${PROJECT}/vertex-trainer/trainer)")
            continue
        package = pool.python_package_spec
        if not package.executor_image_uri:
            raise spec.error(source, f"{field}.pythonPackageSpec.executorImageUri", "is required")
        if not package.package_uris or not all(u.startswith("gs://")
                                               for u in package.package_uris):
            raise spec.error(source, f"{field}.pythonPackageSpec.packageUris",
                             "needs the package's gs:// URI (python setup.py sdist, then upload)")
        prebuilt.add(package.executor_image_uri)
    prefix = job.trial_job_spec.base_output_directory.output_uri_prefix
    if not prefix.startswith("gs://"):
        raise spec.error(source, "trialJobSpec.baseOutputDirectory.outputUriPrefix",
                         f"must be a gs:// URI, got {prefix!r}")
    local = flags.local_path(tuning.trainer_args)
    if local:
        flag, value = local
        given_after = any(flags.dest_of(arg) == flag[2:].replace("-", "_")
                          for arg in tuning.extra_args)
        raise spec.error(source, "the args after --" if given_after else tuning.args_field,
                         f"{flag} {value!r} is a local path, which a Vertex trial cannot "
                         "read; upload it (gcloud storage cp -r) and give its gs:// (or "
                         "/gcs/) path")
    for image in sorted(prebuilt):
        warning = past_end_warning(image, today,
                                   "run our training image instead (containerSpec)")
        if warning:
            print(warning, file=sys.stderr)
    return job


def prerequisites(job: HyperparameterTuningJob, project: str | None, session=None) -> list:
    """What the study needs in the project: the trial image's repository, the output bucket."""
    spec_ = job.trial_job_spec
    return checks.prerequisites(
        project, images=[pool.container_spec.image_uri for pool in spec_.worker_pool_specs
                         if pool.container_spec.image_uri],
        buckets=[spec_.base_output_directory.output_uri_prefix], session=session)


def to_json(job: HyperparameterTuningJob) -> str:
    """The request body, checked to parse back into the SDK's type unchanged."""
    text = json_format.MessageToJson(HyperparameterTuningJob.pb(job), indent=2)
    if HyperparameterTuningJob.from_json(text, ignore_unknown_fields=False) != job:
        raise TrainerError("the job does not survive a JSON round trip; this is a bug")
    return text


def create(job: HyperparameterTuningJob, project: str, region: str) -> str:
    """Creates the job on Vertex AI; returns its resource name."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud import aiplatform

    client = aiplatform.gapic.JobServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})
    try:
        created = client.create_hyperparameter_tuning_job(
            parent=f"projects/{project}/locations/{region}", hyperparameter_tuning_job=job)
    except auth_exceptions.DefaultCredentialsError:
        raise TrainerError("no Google Cloud credentials; run `gcloud auth "
                           "application-default login`") from None
    except api_exceptions.GoogleAPICallError as err:
        raise TrainerError(f"Vertex AI refused the job: {err.message or err}") from None
    return created.name


def _init_sdk(project: str | None, region: str) -> None:
    """aiplatform.init, which checks the region name offline before anything is sent."""
    from google.cloud import aiplatform

    try:
        aiplatform.init(project=project, location=region)
    except ValueError:
        raise TrainerError(f"--region {region!r} is not a Vertex AI region") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="vertex-trainer tune-submit", allow_abbrev=False,
        usage="%(prog)s CONFIG --project P [options] [--dry-run] [-- TRAINER_FLAGS ...]",
        description="Create a Vertex AI hyperparameter-tuning job from a tuning config.",
        epilog="TRAINER_FLAGS (after --) are appended to the config's trainer args, e.g. "
               "-- --train-files 'gs://B/data/train-*' --eval-files 'gs://B/data/eval-*'; "
               "their paths must be gs:// (or /gcs/).")
    cli.add_common(parser, parallel_default="the config's parallelTrialCount")
    add_location(parser, "Google Cloud project (also fills ${PROJECT}); required unless "
                         "--dry-run, which writes PROJECT",
                 "Vertex AI region (also fills ${REGION})")
    parser.add_argument("--display-name", help="default: the config's displayName, else "
                                               "<config name>-<time>")
    add_dry_run(parser, "the job's JSON (the request body), offline")

    def body() -> int:
        with usage_errors():
            args, trainer_args = parse_command(parser, argv)
            if not args.project and not args.dry_run:
                raise TrainerError("--project is required to submit (or use --dry-run)")
            _init_sdk(args.project, args.region)
            defaults = {"REGION": args.region, "PROJECT": args.project or "PROJECT"}
            tuning = spec.load(args.config, cli.placeholder_values(args.set, defaults),
                               extra_args=trainer_args, max_trials=args.max_trials,
                               parallel=args.parallel_trials)
            job = request_job(tuning, args.display_name, datetime.date.today())
        if args.dry_run:
            print(to_json(job))
            # On stderr: stdout stays the request body alone, for piping.
            print("prerequisites (each with the command that creates it):\n" + "\n".join(
                f"- {p.line()}" for p in prerequisites(job, args.project)), file=sys.stderr)
            print(f"dry run: valid; would create it in projects/{args.project or 'PROJECT'}/"
                  f"locations/{args.region}", file=sys.stderr)
            return 0
        session = checks.session_if_credentials()
        checks.verify(prerequisites(job, args.project, session))
        name = create(job, args.project, args.region)
        print(name)
        print(f"follow it: gcloud ai hp-tuning-jobs describe {name.rsplit('/', 1)[-1]} "
              f"--project {args.project} --region {args.region}", file=sys.stderr)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
