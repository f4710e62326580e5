"""The requirements our Dockerfiles install beside the wheel (trainer/containers/requirements.py)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO
from trainer.containers.requirements import requirements
from trainer.errors import TrainerError

METADATA = ["tensorflow>=2.17", "tensorboard", "cloudml-hypertune",
            'starlette>=0.37; extra == "serve"',
            'ai-edge-litert>=2.1; platform_system != "Windows" and extra == "serve"',
            'pytest; extra == "test"', 'TensorFlow_CPU; python_version >= "3.10"']


def test_parts_are_read_from_the_metadata_without_the_named_distributions():
    assert requirements(["core"], ["tensorflow", "tensorflow-cpu"], METADATA) == \
        ["tensorboard", "cloudml-hypertune"]
    assert requirements(["serve"], [], METADATA) == \
        ["starlette>=0.37", 'ai-edge-litert>=2.1; platform_system != "Windows"']
    assert requirements(["core", "test"], ["TensorFlow"], METADATA) == \
        ["tensorboard", "cloudml-hypertune", "pytest", 'TensorFlow_CPU; python_version >= "3.10"']
    with pytest.raises(TrainerError, match=r"has no extra 'gpu'; it has \['serve', 'test'\]"):
        requirements(["gpu"], [], METADATA)


def test_the_command_needs_the_installed_package_and_says_so_in_one_line():
    done = subprocess.run([sys.executable, "-m", "trainer.containers.requirements", "serve"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    # Run from a checkout the distribution may be installed or not; either way one clean answer.
    if done.returncode:
        assert done.stderr.strip().splitlines()[-1] == (
            "error: vertex-trainer is not installed: pip install --no-deps its wheel first")
    else:
        assert "starlette>=0.37" in done.stdout.split()
