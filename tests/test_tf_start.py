"""A quiet start on CPU-only machines: TensorFlow's pre-logging lines filtered, real errors kept."""

import os
import subprocess
import sys

import pytest

from tests.conftest import FP32, REPO
from trainer import tf_start

CUINIT = ("E0000 00:00:1796557582.177703   15582 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
ONEDNN = "I0000 00:00:1796557580.973845   15582 port.cc:153] oneDNN custom operations are on."
PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
OTHER_ERROR = "E0000 00:00:1796557582.2   15582 gpu_device.cc:2020] Could not load libcudnn"
WARNING = "W0000 00:00:1796557582.3   15582 something.cc:1] a warning"


@pytest.mark.parametrize("line, level, gpu, noise", [
    (CUINIT, 2, False, True),
    (CUINIT, 2, True, False),  # a GPU machine whose driver fails: a real error
    (CUINIT, 0, False, True),
    (OTHER_ERROR, 2, False, False),
    (ONEDNN, 2, False, True),
    (ONEDNN, 0, False, False),  # TF_CPP_MIN_LOG_LEVEL=0 asks for everything
    (PREAMBLE, 2, False, True),
    (PREAMBLE, 0, False, False),
    (WARNING, 1, False, False),
    (WARNING, 2, False, True),
    (OTHER_ERROR, 3, False, True),
    ("F0000 00:00:1.0   1 x.cc:1] Check failed", 3, False, False),
    ("Traceback (most recent call last):", 3, False, False),
])
def test_noise_is_what_the_log_level_hides_and_cuinit_without_a_gpu(line, level, gpu, noise):
    assert tf_start.is_noise(line, level, gpu) is noise


def test_the_filter_sees_what_cpp_writes_to_descriptor_2_and_passes_the_rest():
    code = (
        "import os, sys\n"
        "from trainer import tf_start\n"
        "with tf_start.filtered_stderr(lambda line: 'drop' in line):\n"
        "    os.write(2, b'keep 1\\ndrop this\\nkeep 2')\n"
        "    print('python keeps', file=sys.stderr)\n"
        "os.write(2, b'\\nafter drop\\n')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "keep 1\nkeep 2python keeps\n\nafter drop\n"


@pytest.mark.skipif(tf_start.has_nvidia_device(), reason="a GPU machine prints no cuInit error")
def test_a_cpu_only_run_starts_without_cuda_lines(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "trainer.task", *FP32, "--max-steps", "2",
                             "--model", "dnn", "--job-dir", str(tmp_path)], cwd=REPO,
                            env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cuInit" not in result.stderr and "CUDA" not in result.stderr
    assert "I0000" not in result.stderr and "absl::InitializeLog" not in result.stderr
    assert "done at step 2" in result.stdout


def _quiet_environ() -> dict:
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *argv], cwd=REPO,
                          env=_quiet_environ(), capture_output=True, text=True, timeout=300)


def _assert_quiet(stderr: str) -> None:
    for noise in ("cuInit", "absl::InitializeLog", "I0000", "oneDNN", "cuda drivers"):
        assert noise not in stderr, stderr[-2000:]


@pytest.mark.skipif(tf_start.has_nvidia_device(), reason="a GPU machine prints no cuInit error")
def test_every_command_that_imports_tensorflow_starts_it_quietly(tmp_path):
    from tests.conftest import write_idx
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for prefix, count in (("train", 6), ("t10k", 4)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    records = tmp_path / "records"
    done = _command("prepare-mnist", "--idx-dir", str(tmp_path), "--output-dir", str(records))
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_quiet(done.stderr)
    done = _command("verify", str(records / "train-*"))
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_quiet(done.stderr)

    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "photos" / label / f"{i}.png")
    done = _command("launch", str(tmp_path / "photos"), "--local", "--dry-run",
                    "--predict-image", str(tmp_path / "photos" / "cat" / "0.png"),
                    "--output-dir", str(tmp_path / "launch"))
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_quiet(done.stderr)
    # A failure after TensorFlow started still ends with its one error line.
    done = _command("verify", str(tmp_path / "photos" / "cat" / "0.png"))
    assert done.returncode == 1
    _assert_quiet(done.stderr)
    assert done.stderr.splitlines()[-1].startswith("error: "), done.stderr[-2000:]


def test_the_first_tensorflow_import_anywhere_is_filtered_and_real_errors_pass(tmp_path):
    # A stand-in package named tensorflow whose import writes what TensorFlow's C++ writes on a
    # CPU-only machine, beside an error that must get through; the real one writes no such
    # error here.
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os, types\n"
        f"os.write(2, {PREAMBLE!r}.encode() + b'\\n' + {ONEDNN!r}.encode() + b'\\n')\n"
        "config = types.SimpleNamespace(list_physical_devices=lambda: os.write(2, "
        f"{CUINIT!r}.encode() + b'\\n' + {OTHER_ERROR!r}.encode() + b'\\n'))\n")
    code = ("import sys\n"
            "from trainer.cli import run_cli\n"
            "def body():\n"
            "    import tensorflow\n"
            "    assert tensorflow.__spec__.loader.__class__.__name__ == 'SourceFileLoader'\n"
            "    print('after', file=sys.stderr)\n"
            "sys.exit(run_cli(body))\n")
    environ = {**_quiet_environ(),
               "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == OTHER_ERROR + "\nafter\n"
