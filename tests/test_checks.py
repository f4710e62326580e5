"""Prerequisites: what is checked from files here, what with one GET (against a server on
127.0.0.1 answering as Google's APIs do), and how missing ones stop a run."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading

import pytest
import requests

from trainer.cloud import checks
from trainer.errors import TrainerError


@contextlib.contextmanager
def api(answers: dict[str, tuple[int, dict]], otherwise=(404, {"error": {"code": 404}})):
    """A local HTTP server answering GET PATH with answers[PATH] (status, JSON), any other path
    with `otherwise`; yields its base URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answers.get(self.path, otherwise)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Rebased(requests.Session):
    """A session sending Google API URLs to the local server instead (path kept)."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base
        self.trust_env = False  # straight to it, whatever proxy the environment names

    def get(self, url, **kwargs):
        return super().get(self.base + "/" + url.split("/", 3)[3], **kwargs)


def test_online_checks_read_404_as_missing_and_a_disabled_api_as_missing(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no login for the registry
    answers = {
        "/v1/projects/p/services/aiplatform.googleapis.com": (200, {"state": "ENABLED"}),
        "/v1/projects/p/services/storage.googleapis.com": (200, {"state": "DISABLED"}),
        "/v1/projects/p/services/artifactregistry.googleapis.com": (403, {}),  # may not look
        "/storage/v1/b/present": (200, {"name": "present"}),
    }
    with api(answers) as base:
        found = checks.prerequisites(
            "p", images=["us-docker.pkg.dev/p/vertex-trainer/trainer:1"], build="local",
            buckets=["gs://present/x", "gs://absent/y"], session=Rebased(base))
        # (Credentials are files of this machine: test_credentials_... below.)
        missing = [p.what for p in found[1:] if p.check is not None and not p.check()]
    assert missing == ["the storage.googleapis.com API enabled in p",
                       "the Artifact Registry repository us-docker.pkg.dev/p/vertex-trainer",
                       "docker allowed to push to us-docker.pkg.dev",
                       "the bucket gs://absent"]


def test_an_api_error_other_than_missing_is_one_line_naming_the_url():
    with api({"/storage/v1/b/b": (500, {"error": "boom"})}) as base:
        (bucket,) = [p for p in checks.prerequisites("p", buckets=["gs://b"],
                                                     session=Rebased(base))
                     if "bucket" in p.what]
        with pytest.raises(TrainerError, match=r"^checking https://storage.googleapis.com/"
                                               r"storage/v1/b/b failed: HTTP 500"):
            bucket.check()


def test_every_missing_prerequisite_is_one_line_with_its_command(capsys):
    present = checks.Prerequisite("a", "make a", lambda: True)
    unknown = checks.Prerequisite("b", "make b")  # cannot be checked from here: not in the way
    one = checks.Prerequisite("the bucket gs://x", "gcloud storage buckets create gs://x",
                              lambda: False)
    two = checks.Prerequisite("docker allowed to push to h", "gcloud auth configure-docker h",
                              lambda: False)
    checks.verify([present, unknown])
    with pytest.raises(TrainerError, match=r"^missing the bucket gs://x: gcloud storage buckets "
                                           r"create gs://x$"):
        checks.verify([present, one])
    with pytest.raises(TrainerError, match=r"^2 prerequisites are missing \(each above"):
        checks.verify([one, present, two])
    assert capsys.readouterr().err.splitlines() == [
        "missing the bucket gs://x: gcloud storage buckets create gs://x",
        "missing docker allowed to push to h: gcloud auth configure-docker h"]


def test_credentials_and_docker_logins_are_read_from_their_files(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    assert not checks.adc_present()
    (tmp_path / "key.json").write_text("{}")
    assert checks.adc_present()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # not on Google Cloud: no metadata server
    assert not checks.adc_present()
    (tmp_path / "gcloud").mkdir()
    (tmp_path / "gcloud" / "application_default_credentials.json").write_text("{}")
    assert checks.adc_present()

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    assert not checks.docker_can_push("us-docker.pkg.dev")
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps(
        {"credHelpers": {"us-docker.pkg.dev": "gcloud"}}))
    assert checks.docker_can_push("us-docker.pkg.dev")
    assert not checks.docker_can_push("europe-docker.pkg.dev")
