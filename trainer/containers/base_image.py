"""Build a slim Debian bookworm + Python base image from Debian's own mirror (no Docker Hub).

    python scripts/base_image.py            # prints the image name, building it when missing
    docker build --network host --build-arg BASE_IMAGE=$(python scripts/base_image.py) -t T .

`debootstrap --variant=minbase` makes the root file system, `docker import` turns it into an
image, and one layer adds python3, pip and venv (EXTERNALLY-MANAGED removed, so pip installs
system-wide as in the official python images; `python` linked to python3). The tag is a hash
of everything that goes in, so a rerun finds the image and returns at once. The base trusts this
machine's CA bundle (copied in), so pip works behind a TLS-inspecting proxy as it does here;
needs root (debootstrap) and a running Docker daemon.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.cli import OneLineParser, run_cli
from trainer.containers.daemon import require_docker
from trainer.errors import TrainerError

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
REPOSITORY = "local/bookworm-python"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PYTHON_LAYER = """\
FROM {rootfs}
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY ca-certificates.crt /tmp/host-ca.crt
RUN apt-get update \\
    && apt-get install -y --no-install-recommends \\
        python3 python3-pip python3-venv ca-certificates \\
    && if [ -s /tmp/host-ca.crt ]; then \\
        cp /tmp/host-ca.crt /etc/ssl/certs/ca-certificates.crt; fi \\
    && rm /tmp/host-ca.crt \\
    && rm -f /usr/lib/python3.*/EXTERNALLY-MANAGED \\
    && ln -s /usr/bin/python3 /usr/local/bin/python \\
    && apt-get clean \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
CMD ["python"]
"""


class BuildError(RuntimeError):
    """A build step failed; the message names the step and ends with the tail of its log."""


def run_step(step: str, command: list[str], log_lines: int = 30, **kwargs) -> str:
    """Runs a command; on failure raises BuildError naming `step` with the log's last lines."""
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)
    if done.returncode:
        tail = "\n".join(done.stdout.splitlines()[-log_lines:])
        raise BuildError(f"{step} failed (exit {done.returncode}): {' '.join(command[:4])} ...\n"
                         f"{tail}")
    return done.stdout


def content_tag() -> str:
    recipe = hashlib.sha256(f"{SUITE} {MIRROR}\n{PYTHON_LAYER}".encode())
    if HOST_CA_BUNDLE.exists():
        recipe.update(HOST_CA_BUNDLE.read_bytes())
    return recipe.hexdigest()[:12]


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def ensure_base_image(log=print) -> str:
    """The base image's name; builds it first when this machine does not have it yet."""
    image = f"{REPOSITORY}:{content_tag()}"
    if image_exists(image):
        return image
    rootfs_image = f"{REPOSITORY}-rootfs:{content_tag()}"
    with tempfile.TemporaryDirectory(prefix="base-image-") as work:
        root = Path(work) / "rootfs"
        started = time.monotonic()
        log(f"debootstrap {SUITE} (minbase) from {MIRROR} ...")
        run_step("debootstrap", ["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR])
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            run_step("docker import", ["docker", "import", "-", rootfs_image], stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
        context = Path(work) / "context"
        context.mkdir()
        bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
        (context / "ca-certificates.crt").write_bytes(bundle)
        (context / "Dockerfile").write_text(PYTHON_LAYER.format(rootfs=rootfs_image))
        log(f"adding python3 to {rootfs_image} ...")
        run_step("base image build", ["docker", "build", "--network", "host", "-t", image,
                                      str(context)])
        # Only the finished base is kept: the rootfs image is its parent layer anyway.
        subprocess.run(["docker", "image", "rm", rootfs_image], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        log(f"built {image} in {time.monotonic() - started:.0f} s")
    return image


def main(argv=None) -> int:
    def body():
        OneLineParser(prog="python -m trainer.containers.base_image",
                      description=__doc__.split("\n\n")[0]).parse_args(argv)
        require_docker()
        try:
            print(ensure_base_image(log=lambda line: print(line, file=sys.stderr)))
        except (BuildError, OSError) as err:
            raise TrainerError(str(err)) from None

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
