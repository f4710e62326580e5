"""The images' build context: from a checkout, and from an installed package with no checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from tests.conftest import REPO
from trainer.containers.images import DOCKERFILES, build_context, build_wheel


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


def _metadata(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
        return archive.read(path).decode()


def test_a_context_holds_the_wheel_and_every_dockerfile(tmp_path):
    built = build_context(tmp_path / "context")
    (wheel,) = built.glob("*.whl")
    assert {"trainer/task.py", "trainer/sample/eval-00000-of-00001.tfrecord.gz",
            "hptuning/cnn.yaml", "trainer/containers/serving.Dockerfile"} <= _names(wheel)
    assert all((built / dockerfile).is_file() for dockerfile in DOCKERFILES.values())


def test_a_package_installed_without_its_checkout_repacks_into_the_same_wheel(tmp_path):
    (tmp_path / "from-checkout").mkdir()
    wheel = build_wheel(REPO, tmp_path / "from-checkout")

    # Installed in a virtualenv elsewhere, run from another directory: no checkout in sight.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = str(env_dir / "bin" / "python")
    # Without PYTHONPATH: a checkout on it (with setup.py's egg-info) reads as installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--force-reinstall", str(wheel)], check=True, capture_output=True, env=env)
    repacked_dir = tmp_path / "from-install"
    done = subprocess.run([python, "-m", "trainer.containers.images", str(repacked_dir)],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    (repacked,) = repacked_dir.glob("*.whl")
    assert _names(repacked) == _names(wheel)
    for name in ("METADATA", "entry_points.txt"):
        assert _metadata(repacked, name) == _metadata(wheel, name)
    # The repacked wheel installs like the original (pip checks RECORD's hashes and sizes).
    check = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--no-index", "--target", str(tmp_path / "target"), str(repacked)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (tmp_path / "target" / "trainer" / "task.py").read_bytes() == \
        (REPO / "trainer" / "task.py").read_bytes()
