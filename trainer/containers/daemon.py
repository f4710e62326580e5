"""Is there a Docker daemon to talk to? Asked once, before a command spends any work.

Without the check a stopped daemon shows up late and disguised: `launch --local` prepares the
data first, then its `docker build` fails with a hint about Docker Hub, the real cause only in
the lines above. `docker version` asks the daemon for its version through the same client,
socket and DOCKER_HOST the command's own docker calls will use.
"""

from __future__ import annotations

import shutil
import subprocess

from trainer.errors import TrainerError

TIMEOUT_SECONDS = 15
_START = "start it (e.g. sudo systemctl start docker, or dockerd)"


def require_docker(instead: str = "") -> None:
    """Raises a one-line TrainerError unless a `docker` client on PATH reaches a daemon;
    `instead` is what the user can do without Docker, e.g. 'drop --image'."""
    instead = f" or {instead}" if instead else ""
    if shutil.which("docker") is None:
        raise TrainerError("this needs Docker, and no `docker` command is on PATH: install "
                           f"Docker Engine (https://docs.docker.com/engine/install/){instead}")
    command = ["docker", "version", "--format", "{{.Server.Version}}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise TrainerError(f"the Docker daemon did not answer `docker version` within "
                           f"{TIMEOUT_SECONDS} s: restart it{instead}") from None
    if done.returncode == 0:
        return
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    cause = lines[-1] if lines else f"`docker version` exit code {done.returncode}"
    fix = _START
    if "permission denied" in cause.lower():
        fix = "add yourself to its group (sudo usermod -aG docker $USER, then log in again)"
    raise TrainerError(f"the Docker daemon is not reachable ({cause}): {fix}{instead}")
