"""Shared test data: tiny, learnable, generated on the fly with the package's own writers."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
# The tests' own helpers import as `tests.*`, so the checkout goes on the path, but LAST: an
# installed vertex-trainer (what `pip install ".[test]" && pytest` and CI test) wins over the
# checkout's sources, and a module or package file missing from the wheel fails here.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
import trainer  # noqa: E402  (after the path is set)

UNDER_TEST = Path(trainer.__file__).resolve().parent
INSTALLED = UNDER_TEST.parent != REPO
# Subprocesses (`python -m trainer.task`, run in the checkout) must run the same code: `-m` would
# put their working directory first, so with an installed package it stays off their path; the
# checkout's sources reach them through PYTHONPATH.
if INSTALLED:
    os.environ["PYTHONSAFEPATH"] = "1"
elif str(REPO) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                             os.environ.get("PYTHONPATH")]))
# Training tests run in float32 on every machine: --mixed-precision defaults to auto, which picks
# bf16 on CPUs with AMX-BF16/AVX512_BF16 and none on others, so an unpinned suite would train
# differently from one CI machine to the next. Tests of auto inject the device facts instead
# (tests/test_precision.py, tests/test_loss_scale.py).
FP32 = ("--mixed-precision", "none")


def pytest_report_header(config):
    return f"trainer under test: {UNDER_TEST} ({'installed' if INSTALLED else 'the checkout'})"


def pytest_configure(config):
    if os.environ.get("VT_TEST_INSTALLED") == "1" and not INSTALLED:
        raise pytest.UsageError(f"VT_TEST_INSTALLED=1, but trainer comes from the checkout "
                                f"({UNDER_TEST}): pip install . first, and run `pytest`, not "
                                "`python -m pytest` (which puts the checkout first)")


def synthetic_images(count: int, seed: int = 0, shape=(28, 28, 1), num_classes: int = 10):
    """uint8 images whose class is the position of a bright square: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    images = rng.integers(0, 60, (count, *shape), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 5)
        image[4 + 10 * row:10 + 10 * row, 1 + 5 * col:6 + 5 * col] = 255
    return images, labels


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An idx file of unsigned bytes, as MNIST ships them."""
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_dataset(directory: Path, count: int, shards: int, prefix: str, seed: int = 0,
                  compression: str = "", schema: str = "current") -> str:
    """Writes shards with trainer/tools/prepare_mnist.py's writer; returns their glob."""
    from trainer.tools.prepare_mnist import write_shards

    images, labels = synthetic_images(count, seed)
    write_shards(images, labels, str(directory), prefix, shards, compression, schema,
                 progress=False)
    return str(directory / f"{prefix}-*")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """(train glob, eval glob): 2,000 training and 500 eval records, 4 + 1 shards, GZIP train."""
    directory = tmp_path_factory.mktemp("data")
    return (write_dataset(directory, 2000, 4, "train", seed=1, compression="GZIP"),
            write_dataset(directory, 500, 1, "eval", seed=2))


def write_records(path: Path, records: list[bytes], compression: str = "") -> str:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type=compression)) as w:
        for record in records:
            w.write(record)
    return str(path)


def example(**features) -> bytes:
    """A tf.train.Example from keyword features: bytes -> BytesList, int -> Int64List."""
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if isinstance(value, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in features.items()})).SerializeToString()


def good_record(label: int = 3, size: int = 784) -> bytes:
    from trainer.records import serialize_example

    return serialize_example(bytes(size), label, 28, 28, 1)


def run_task(*args: str, env: dict | None = None, timeout: float = 300,
             **kwargs) -> subprocess.CompletedProcess:
    """`python -m trainer.task ARGS` in a subprocess, as Vertex runs it."""
    return subprocess.run([sys.executable, "-m", "trainer.task", *FP32, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=kwargs.get("cwd", REPO))
