"""Checks before anything is spent: the trainer's flags, paths a Vertex job can read, where its
export goes, and what must exist in the project first.

The input checks are pure (the trainer's own parser, no TensorFlow) and run in dry-runs too. The
prerequisites are one line each with the command that creates them; a dry-run prints them, a real
run checks those that can be checked from here cheaply (files on this machine, then one small
authorized GET each) and stops with every missing one named before a job, a build or an upload
starts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from trainer.errors import TrainerError

# Trainer flags that name files a Vertex job must be able to read (or write: --job-dir).
PATH_FLAGS = ("train_files", "eval_files", "test_files", "label_map", "pretrained_weights",
              "init_checkpoint", "job_dir")
# Where a Vertex job's container sees Cloud Storage (Cloud Storage FUSE).
_CLOUD_PREFIXES = ("gs://", "/gcs/")
_ADC = Path("~/.config/gcloud/application_default_credentials.json")


def trainer_flags(argv: Sequence[str], where: str = "trainer flags after --"):
    """The trainer's flags parsed by its own parser: a misspelt flag is a one-line error."""
    from trainer.cli import UsageError
    from trainer.config import build_parser

    try:
        return build_parser().parse_args(list(argv))
    except UsageError as err:
        message = str(err).removesuffix(" (see --help)")
        raise TrainerError(f"{where}: {message} (see vertex-trainer train --help)") from None


def is_cloud_path(path: str) -> bool:
    return path.startswith(_CLOUD_PREFIXES)


def first_local_path(flags) -> tuple[str, str] | None:
    """(flag, the path) of the first path flag naming a file of this machine, or None."""
    for name in PATH_FLAGS:
        value = getattr(flags, name, None)
        if not value or (name == "pretrained_weights" and value == "imagenet"):
            continue
        local = [p.strip() for p in value.split(",") if p.strip() and not is_cloud_path(p.strip())]
        if local:
            return "--" + name.replace("_", "-"), local[0]
    return None


def require_cloud_paths(flags, where: str = "trainer flags after --") -> None:
    """Refuses paths of this machine in flags a Vertex job reads: the job would not find them."""
    local = first_local_path(flags)
    if local:
        flag, path = local
        raise TrainerError(
            f"{where}: {flag} {path} is a path on this machine, which a Vertex job "
            "cannot read; give gs://BUCKET/... (upload a photo folder or manifest with "
            "`vertex-trainer prepare --input PATH --output-dir gs://BUCKET/data`)")


def require_output(base_output_dir: str | None, flags, flag: str = "--base-output-dir") -> None:
    """A cloud job must write its export somewhere that outlives its machines."""
    if base_output_dir:
        if not base_output_dir.startswith("gs://"):
            raise TrainerError(f"{flag} must be a gs:// path, got {base_output_dir!r}")
        return
    if flags.job_dir and is_cloud_path(flags.job_dir):
        return
    raise TrainerError(f"{flag} is missing: without it (or a gs:// --job-dir) the checkpoints "
                       "and the export stay on the job's machines and are lost when it ends; "
                       f"give {flag} gs://BUCKET/runs/NAME")


def require_data(flags, managed_dataset: bool = False) -> None:
    """A cloud job without data would stop at once (the trainer refuses to train the bundled
    sample inside a Vertex job unless asked)."""
    if managed_dataset or flags.train_files or flags.bundled_sample:
        return
    raise TrainerError("the job has no data: give --train-files and --eval-files (gs://) after "
                       "--, a managed dataset, or --bundled-sample to train the bundled MNIST "
                       "sample on purpose")


@dataclass(frozen=True)
class Prerequisite:
    """Something that must exist before the run, the command that creates it, and how to check
    it (None: cannot be checked from here)."""

    what: str
    command: str
    check: Callable[[], bool] | None = None

    def line(self) -> str:
        return f"{self.what}: {self.command}"


def image_host(image: str) -> str:
    return image.split("/", 1)[0]


def prerequisites(project: str | None, *, images: Sequence[str] = (), build: str | None = None,
                  buckets: Sequence[str] = (), service_account: str | None = None,
                  tensorboard: str | None = None, session=None) -> list[Prerequisite]:
    """What a run with these settings needs in `project`, in the order to create it.
    `session`: an authorized requests session for the online checks (None: no online checks)."""
    p = project or "PROJECT"
    apis = ["aiplatform.googleapis.com", "storage.googleapis.com"]
    if build:
        apis.append("artifactregistry.googleapis.com")
    if build == "cloud":
        apis.append("cloudbuild.googleapis.com")
    found = [Prerequisite(
        "application-default credentials on this machine",
        "gcloud auth application-default login", adc_present)]
    found += [Prerequisite(f"the {api} API enabled in {p}",
                           f"gcloud services enable {api} --project={p}",
                           _online(session, f"https://serviceusage.googleapis.com/v1/projects/"
                                            f"{p}/services/{api}", _enabled))
              for api in apis]
    repositories = sorted({tuple(image.split("/")[:3]) for image in images
                           if image_host(image).endswith("-docker.pkg.dev")})
    for host, repo_project, repository in repositories:
        region = host.removesuffix("-docker.pkg.dev")
        found.append(Prerequisite(
            f"the Artifact Registry repository {host}/{repo_project}/{repository}",
            f"gcloud artifacts repositories create {repository} --repository-format=docker "
            f"--location={region} --project={repo_project}",
            _online(session, f"https://artifactregistry.googleapis.com/v1/projects/"
                             f"{repo_project}/locations/{region}/repositories/{repository}")))
        if build == "local":
            found.append(Prerequisite(
                f"docker allowed to push to {host}", f"gcloud auth configure-docker {host}",
                lambda host=host: docker_can_push(host)))
    for bucket in sorted({b.split("/")[2] for b in buckets if b.startswith("gs://")}):
        found.append(Prerequisite(
            f"the bucket gs://{bucket}",
            f"gcloud storage buckets create gs://{bucket} --project={p} --location=REGION",
            _online(session, f"https://storage.googleapis.com/storage/v1/b/{bucket}")))
    if build == "cloud":
        found.append(Prerequisite("the gcloud command (Cloud Build is started with it)",
                                  "https://cloud.google.com/sdk/docs/install",
                                  lambda: shutil.which("gcloud") is not None))
    if tensorboard:
        account = service_account or f"vertex-trainer@{p}.iam.gserviceaccount.com"
        found.append(Prerequisite(
            f"a service account for --tensorboard ({account}) with roles/aiplatform.user and "
            "write access to the output bucket",
            f"gcloud iam service-accounts create {account.split('@')[0]} --project={p} && "
            f"gcloud projects add-iam-policy-binding {p} --member=serviceAccount:{account} "
            "--role=roles/aiplatform.user"))
    return found


def adc_present() -> bool:
    """Application-default credentials as google.auth finds them: the file the variable names,
    gcloud's well-known file, else (on Google Cloud: a VM, Cloud Build, Workbench) the metadata
    server, which google.auth probes for a few seconds where there is none."""
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        return Path(named).is_file()
    config = os.environ.get("CLOUDSDK_CONFIG")
    if (Path(config, _ADC.name) if config else _ADC.expanduser()).is_file():
        return True
    import google.auth

    try:
        google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        return False
    return True


def docker_can_push(host: str) -> bool:
    """`gcloud auth configure-docker HOST` wrote a credential helper (or a login exists)."""
    config_dir = os.environ.get("DOCKER_CONFIG") or Path("~/.docker").expanduser()
    try:
        config = json.loads((Path(config_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return host in config.get("credHelpers", {}) or host in config.get("auths", {})


def _enabled(response) -> bool:
    return response.json().get("state") == "ENABLED"


def _online(session, url: str, accept: Callable = lambda response: True):
    """A check by one GET: 404 means missing. 403 says nothing (the caller may not look, or the
    API that answers is disabled, which its own check reports): the run goes on."""
    if session is None:
        return None

    def check() -> bool:
        response = session.get(url, timeout=30)
        if response.status_code == 404:
            return False
        if response.status_code == 403:
            return True
        if response.status_code >= 400:
            raise TrainerError(f"checking {url} failed: HTTP {response.status_code} "
                               f"{response.text[:200]!r}")
        return accept(response)

    return check


def session_if_credentials():
    """An authorized session where application-default credentials exist, else None: the
    prerequisites then say the credentials are missing instead of checking the rest."""
    return authorized_session() if adc_present() else None


def authorized_session():
    """A requests session with the application-default credentials (TrainerError without)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except google.auth.exceptions.DefaultCredentialsError:
        raise TrainerError("no application-default credentials: run `gcloud auth "
                           "application-default login`") from None
    return AuthorizedSession(credentials)


def verify(found: Sequence[Prerequisite]) -> None:
    """Runs each check; every missing prerequisite is one line on stderr with its command, and
    the run stops before anything is spent."""
    missing = []
    for prerequisite in found:
        if prerequisite.check is not None and not prerequisite.check():
            missing.append(prerequisite)
    if not missing:
        return
    if len(missing) == 1:
        raise TrainerError(f"missing {missing[0].line()}")
    for prerequisite in missing:
        print(f"missing {prerequisite.line()}", file=sys.stderr)
    raise TrainerError(f"{len(missing)} prerequisites are missing (each above, with the command "
                       "that creates it)")
