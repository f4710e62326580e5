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
