"""Commands that need Docker ask for a daemon first: a stopped one, or no docker at all, is one
line naming the cause and the fix before any data is prepared or any image built. A `docker`
script on PATH stands in for a client whose daemon is down; the real daemon is left alone."""

from __future__ import annotations

import os
import stat

import pytest

from tests.image_data import make_image_set
from trainer.cloud import launch, submit
from trainer.containers import base_image, daemon
from trainer.errors import TrainerError
from trainer.tools import local_cluster

DOWN = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
        "daemon running?")
DENIED = ("permission denied while trying to connect to the Docker daemon socket at "
          "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/version\": "
          "dial unix /var/run/docker.sock: connect: permission denied")


def fake_docker(directory, monkeypatch, stderr: str, code: int = 1):
    """A `docker` that writes `stderr` and exits with `code`, first on PATH; every call it gets
    is appended to directory/calls."""
    script = directory / "docker"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {directory / 'calls'}\n"
                      f"cat >&2 <<'END'\n{stderr}\nEND\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory / "calls"


@pytest.fixture
def daemon_down(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return fake_docker(bin_dir, monkeypatch, DOWN)


def test_a_stopped_daemon_is_one_line_with_its_cause_and_the_fix(daemon_down):
    with pytest.raises(TrainerError) as caught:
        daemon.require_docker("drop --image")
    assert str(caught.value) == (
        f"the Docker daemon is not reachable ({DOWN}): start it (e.g. sudo systemctl start "
        "docker, or dockerd) or drop --image")


def test_a_socket_without_permission_says_to_join_the_docker_group(tmp_path, monkeypatch):
    fake_docker(tmp_path, monkeypatch, "Client: Docker Engine\n" + DENIED)
    with pytest.raises(TrainerError, match=r"not reachable \(permission denied .*: add yourself "
                                           r"to its group \(sudo usermod -aG docker \$USER"):
        daemon.require_docker()


def test_no_docker_command_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TrainerError, match=r"^this needs Docker, and no `docker` command is on "
                                           r"PATH: install Docker Engine \(https://\S+\) or x$"):
        daemon.require_docker("x")


def test_a_daemon_that_answers_passes(tmp_path, monkeypatch):
    calls = fake_docker(tmp_path, monkeypatch, "", code=0)
    daemon.require_docker()
    assert calls.read_text() == "version --format {{.Server.Version}}\n"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_launch_local_stops_before_preparing_anything(capsys, daemon_down, tmp_path):
    photos = make_image_set(tmp_path / "photos", train=20, evaluation=0, test=0)
    output = tmp_path / "out"
    assert launch.main([str(photos.train_dir), "--local", "--output-dir", str(output)]) == 1
    assert one_error_line(capsys) == (
        f"error: the Docker daemon is not reachable ({DOWN}): start it (e.g. sudo systemctl "
        "start docker, or dockerd) or run on Vertex AI (drop --local)")
    assert not output.exists()
    assert daemon_down.read_text() == "version --format {{.Server.Version}}\n"


def test_building_locally_for_vertex_stops_before_the_build(capsys, daemon_down, monkeypatch):
    monkeypatch.setattr(submit.checks, "adc_present", lambda: False)
    assert submit.main(["--project", "p", "--build", "local", "--base-output-dir", "gs://b/r",
                        "--", "--train-files", "gs://b/d/train-*"]) == 1
    assert one_error_line(capsys).endswith("or build with Cloud Build (--build cloud)")
    assert daemon_down.read_text() == "version --format {{.Server.Version}}\n"


def test_a_cluster_of_containers_stops_before_starting_any(capsys, daemon_down):
    assert local_cluster.main(["--image", "trainer:1", "--", "--max-steps", "1"]) == 1
    assert one_error_line(capsys).endswith(
        "or run the tasks as processes of this Python (drop --image)")


def test_the_debian_base_image_needs_the_daemon(capsys, daemon_down):
    assert base_image.main([]) == 1
    assert one_error_line(capsys) == (
        f"error: the Docker daemon is not reachable ({DOWN}): start it (e.g. sudo systemctl "
        "start docker, or dockerd)")
