"""A cached TensorFlow 2.15 interpreter: the TF of Vertex's newest prebuilt prediction image,
and the last with tf.estimator (the benchmark's baseline; the export tests load our exports in it).

Built once with pip into `~/.cache/vertex-trainer/tf215-<key>/` (`$XDG_CACHE_HOME` is honoured),
the key covering the requirement, this Python and the platform; later runs reuse it. A lock
keeps concurrent runs from building it twice, and a marker written last means a half-built
environment is rebuilt. `$VERTEX_TRAINER_TF215_PYTHON` names an existing interpreter instead
(say, inside the prediction image).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "2.15.1"
# tensorflow-cpu skips the CUDA wheels where it exists; elsewhere tensorflow is CPU-only anyway.
REQUIREMENT = (f"tensorflow-cpu=={VERSION}" if sys.platform == "linux"
               and platform.machine() == "x86_64" else f"tensorflow=={VERSION}")
PYTHON_ENV = "VERTEX_TRAINER_TF215_PYTHON"
_BUILD_TIMEOUT = 1200


class EnvironmentBuildError(RuntimeError):
    """The TF 2.15 environment could not be built (the message says why and what to do)."""


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vertex-trainer"


def _run(args: list[str], what: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=_BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise EnvironmentBuildError(f"{what} took over {_BUILD_TIMEOUT} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise EnvironmentBuildError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def python() -> str:
    """The path of a Python with TensorFlow 2.15, building its environment on first use."""
    if os.environ.get(PYTHON_ENV):
        return os.environ[PYTHON_ENV]
    if sys.version_info[:2] not in ((3, 9), (3, 10), (3, 11)):
        raise EnvironmentBuildError(
            f"TensorFlow {VERSION} has wheels for Python 3.9-3.11, not "
            f"{platform.python_version()}; run under Python 3.11 or set {PYTHON_ENV}")
    key = hashlib.sha256(f"{REQUIREMENT}|{sys.version}|{platform.platform()}".encode())
    venv = _cache_root() / f"tf215-{key.hexdigest()[:12]}"
    interpreter = venv / "bin" / "python"
    complete = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete.exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], f"creating the venv {venv}")
            _run([str(interpreter), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", REQUIREMENT],
                 f"pip install {REQUIREMENT} into {venv} (it needs PyPI)")
            found = _run([str(interpreter), "-c", "import tensorflow as tf; print(tf.__version__)"],
                         f"importing TensorFlow in {venv}").strip().splitlines()[-1]
            if found != VERSION:
                raise EnvironmentBuildError(f"{venv} has TensorFlow {found}, not {VERSION}")
            complete.write_text(REQUIREMENT + "\n")
    return str(interpreter)
