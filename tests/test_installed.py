"""The installed product, as a user gets it: a fresh virtualenv outside the checkout with
`vertex-trainer[all]` installed from the wheel of this checkout (not from PYTHONPATH), every
subcommand's --help, and `vertex-trainer launch PHOTOS --local` from photos to a live local
endpoint: training in our training container, serving in our serving container, the smoke
prediction through the aiplatform SDK's own LocalEndpoint.

Marked `images` (tests/test_images.py's Docker daemon and Debian base image are reused): the
install fetches the extras this machine lacks (FastAPI for the SDK's local client) from the
package index, and the images build as there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
import venv
from pathlib import Path

import pytest

from trainer.commands import COMMANDS
from trainer.containers.images import package_wheel
from tests.image_data import NAMES, make_image_set
from tests.test_images import base_image, docker  # noqa: F401 (fixtures, reused)

pytestmark = pytest.mark.images


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's vertex-trainer command, an environment without PYTHONPATH, a directory
    outside the checkout)."""
    root = tmp_path_factory.mktemp("installed")
    (root / "dist").mkdir()
    wheel = package_wheel(root / "dist")
    env_dir = root / "venv"
    # The system site-packages give TensorFlow (as a Vertex image or a user's machine has it);
    # the package and whatever its extras add come into the venv.
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    # Forced: a vertex-trainer in the system site-packages (as CI installs one) would otherwise
    # satisfy the requirement and the venv would run that one.
    for args in (["--no-deps", "--force-reinstall", str(wheel)], [f"{wheel}[all]"]):
        done = subprocess.run(pip + args, capture_output=True, text=True, env=env, cwd=root)
        assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import trainer, fastapi; print(trainer.__file__)"],
                           capture_output=True, text=True, env=env, cwd=root)
    assert where.stdout.startswith(str(env_dir)), where.stdout + where.stderr
    work = root / "work"
    work.mkdir()
    return str(env_dir / "bin" / "vertex-trainer"), env, work


def test_every_subcommand_answers_help_from_the_installed_package(installed):
    command, env, work = installed
    for name in COMMANDS:
        done = subprocess.run([command, name, "--help"], capture_output=True, text=True,
                              env=env, cwd=work, timeout=120)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert f"vertex-trainer {name}" in done.stdout, name


def test_launch_local_goes_from_photos_to_a_live_endpoint_that_names_the_classes(
        installed, base_image, tmp_path):  # noqa: F811
    command, env, work = installed
    photos = make_image_set(tmp_path / "photos", train=150, evaluation=0, test=0).train_dir
    done = subprocess.run(
        [command, "launch", str(photos), "--local", "--base-image", base_image, "--output-dir",
         str(work / "launch-output"), "--", "--model", "dnn", "--max-steps", "60",
         "--eval-every-steps", "60", "--log-every-steps", "20", "--batch-size", "25",
         "--mixed-precision", "none"],
        capture_output=True, text=True, env=env, cwd=work, timeout=1200)
    log = done.stdout + done.stderr
    stop = re.search(r"stop it with: (docker rm --force \S+)", log)
    try:
        assert done.returncode == 0, log[-4000:]
        # Trained in our training container, with the directories Vertex would set.
        assert re.search(r"^\+ docker run .* --env AIP_MODEL_DIR=\S+/model .*"
                         r"vertex-trainer/trainer:local ", log, re.M), log[-4000:]
        assert re.search(r"done at step 60\b", log), log[-4000:]
        assert re.search(r"== serve \S+/model with vertex-trainer/serving:local on 127\.0\.0\.1:"
                         r"\d+", log), log[-4000:]
        # The SDK's LocalEndpoint got a prediction naming a class (a folder name).
        predicted = re.search(r"^prediction: (\S+): (\S+) \((0\.\d+|1\.000)\), true class (\S+)$",
                              log, re.M)
        assert predicted, log[-4000:]
        assert predicted[2] in NAMES and predicted[4] in NAMES
        assert Path(predicted[1]).parent.parent == photos
        # The printed curl works against the endpoint, which keeps serving.
        curl = re.search(r"^curl -X POST (\S+) -H 'Content-Type: application/json' -d @(\S+)$",
                         log, re.M)
        assert curl and stop, log[-4000:]
        request = urllib.request.Request(curl[1], data=Path(curl[2]).read_bytes(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["predictions"][0]["labels"] == predicted[2]
    finally:
        if stop:
            subprocess.run(stop[1].split(), capture_output=True)
    assert subprocess.run(["docker", "inspect", stop[1].split()[-1]],
                          capture_output=True).returncode != 0  # removed
