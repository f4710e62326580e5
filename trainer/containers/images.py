"""Our container images: their Dockerfiles (package data) and the build context they share.

Every image installs vertex-trainer from a wheel in its build context, so the same Dockerfile
builds from a checkout (`pip wheel` of it) and from an installed package with no checkout at all
(the installed files and metadata repacked as the wheel they came from): `vertex-trainer launch
--local` and `submit --build local` build exactly what is installed. No TensorFlow import.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from trainer.errors import TrainerError

DISTRIBUTION = "vertex-trainer"
HERE = Path(__file__).resolve().parent
DOCKERFILES = {"training": "training.Dockerfile", "serving": "serving.Dockerfile"}
# Top-level packages of the distribution: what a repacked wheel holds besides its metadata.
_PACKAGES = ("trainer", "hptuning")
_SOURCE_FILES = ("setup.py", "README.md", "MANIFEST.in")


def checkout() -> Path | None:
    """The source checkout this code runs from (PYTHONPATH or an editable install), if any."""
    root = HERE.parents[1]
    return root if (root / "setup.py").is_file() else None


def package_wheel(directory: Path) -> Path:
    """vertex-trainer as a wheel in `directory`: built from the checkout when running from one,
    else repacked from the installed distribution."""
    source = checkout()
    if source is not None:
        return build_wheel(source, directory)
    return repack_installed(directory)


def build_wheel(source: Path, directory: Path) -> Path:
    """`pip wheel` of a copy of the checkout's package files: building in place would leave
    build/ behind, whose stale files a later build packs again."""
    with tempfile.TemporaryDirectory(prefix="vertex-trainer-src-") as copy:
        for name in _SOURCE_FILES:
            shutil.copy(source / name, copy)
        for package in _PACKAGES:
            shutil.copytree(source / package, Path(copy) / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # No build isolation: the build needs nothing beyond setuptools and wheel, and must not
        # reach the package index.
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--no-build-isolation", "--wheel-dir", str(directory), copy],
                              capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise TrainerError(f"cannot build the vertex-trainer wheel from {source}: {last} "
                           "(pip install setuptools wheel)")
    (wheel,) = directory.glob("vertex_trainer-*.whl")
    return wheel


def repack_installed(directory: Path) -> Path:
    """The installed distribution's package files and metadata, zipped as a wheel again."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise TrainerError(f"{DISTRIBUTION} is neither installed nor run from a checkout: "
                           "pip install vertex-trainer") from None
    version = dist.version
    info = f"vertex_trainer-{version}.dist-info"
    wheel_path = directory / f"vertex_trainer-{version}-py3-none-any.whl"
    site = Path(dist.locate_file(""))
    records = []
    with zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as wheel:
        def add(name: str, data: bytes) -> None:
            wheel.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{len(data)}")

        for file in sorted(dist.files or [], key=str):
            parts = Path(file).parts
            if parts[0] not in _PACKAGES or "__pycache__" in parts:
                continue
            add(Path(file).as_posix(), (site / file).read_bytes())
        for name in ("METADATA", "entry_points.txt", "top_level.txt"):
            text = dist.read_text(name)
            if text is not None:
                add(f"{info}/{name}", text.encode())
        add(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: vertex-trainer repack\n"
                             b"Root-Is-Purelib: true\nTag: py3-none-any\n")
        records.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    if not any(r.startswith("trainer/task.py,") for r in records):
        raise TrainerError(f"the installed {DISTRIBUTION} at {site} lists no trainer/task.py "
                           "(an editable install whose checkout moved?): reinstall it")
    return wheel_path


def build_context(directory: Path) -> Path:
    """`directory` made a build context: the wheel and every Dockerfile."""
    directory.mkdir(parents=True, exist_ok=True)
    package_wheel(directory)
    for dockerfile in DOCKERFILES.values():
        shutil.copy(HERE / dockerfile, directory / dockerfile)
    return directory


def build_command(kind: str, image: str, context: Path, build_args: dict[str, str] | None = None
                  ) -> list[str]:
    """`docker build` of one of our images from a context made by `build_context`."""
    args = [arg for key, value in (build_args or {}).items()
            for arg in ("--build-arg", f"{key}={value}")]
    return ["docker", "build", "--network", "host", "-f", str(context / DOCKERFILES[kind]),
            *args, "-t", image, str(context)]


# Cloud Build's docker builder; `gcloud builds submit` uploads the context as the working dir.
CLOUD_DOCKER = "gcr.io/cloud-builders/docker"
CLOUD_BUILD_FILE = "cloudbuild.generated.yaml"


def cloud_build_config(images: dict[str, str], training_args: dict[str, str] | None = None
                       ) -> dict:
    """A minimal Cloud Build config over a context made by `build_context`: build each image
    `{kind: name}` (training first: serving reuses its TensorFlow layer) and push it;
    `training_args` are the training image's build arguments (GPU TensorFlow, NCCL plugin).
    Unlike the checkout's cloudbuild.yaml it runs no tests: it is what an installed package
    can build."""
    steps = []
    for kind, image in sorted(images.items(), key=lambda item: item[0] != "training"):
        args = [arg for key, value in ((training_args or {}) if kind == "training" else {}).items()
                for arg in ("--build-arg", f"{key}={value}")]
        steps.append({"id": f"build-{kind}", "name": CLOUD_DOCKER,
                      "args": ["build", "-f", DOCKERFILES[kind], *args, "-t", image, "."]})
    return {"steps": steps, "images": [images[kind] for kind in sorted(images)]}


def write_cloud_build(context: Path, images: dict[str, str],
                      training_args: dict[str, str] | None = None) -> Path:
    """Writes `cloud_build_config` into the context (JSON, which is YAML too); returns it."""
    import json

    path = context / CLOUD_BUILD_FILE
    path.write_text(json.dumps(cloud_build_config(images, training_args), indent=2) + "\n")
    return path


def _pairs(values: list[str], flag: str, keys=None) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not rest or (keys and key not in keys):
            expected = f"{'|'.join(keys)}=NAME" if keys else "KEY=VALUE"
            raise TrainerError(f"{flag} {value!r}: expected {expected}")
        pairs[key] = rest
    return pairs


def main(argv=None) -> int:
    """`python -m trainer.containers.images DIR [--cloud-build KIND=IMAGE ...]`: makes DIR a
    build context; with --cloud-build also the Cloud Build config that builds and pushes."""
    from trainer.cli import OneLineParser, run_cli, usage_errors

    def body():
        p = OneLineParser(prog="python -m trainer.containers.images",
                          description="Make DIR a build context of our images: the "
                                      "vertex-trainer wheel and the Dockerfiles.")
        p.add_argument("directory", metavar="DIR")
        p.add_argument("--cloud-build", action="append", default=[], metavar="KIND=IMAGE",
                       help=f"also write DIR/{CLOUD_BUILD_FILE} building and pushing this image "
                            f"(KIND: {', '.join(DOCKERFILES)}; repeatable)")
        p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="a docker build argument of the training image's Cloud Build step "
                            "(repeatable)")
        with usage_errors():
            args = p.parse_args(argv)
            images = _pairs(args.cloud_build, "--cloud-build", tuple(DOCKERFILES))
            build_args = _pairs(args.build_arg, "--build-arg")
        context = build_context(Path(args.directory))
        if images:
            write_cloud_build(context, images, build_args)
        print(context)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
