"""The serving benchmark runs end to end against its own server on 127.0.0.1."""

import subprocess
import sys

from tests.conftest import REPO


def test_benchmark_prints_rates_and_latencies_for_1_and_32_instances():
    done = subprocess.run([sys.executable, "-m", "trainer.benchmarks.serving", "--signature",
                           "encoded_image", "--requests", "3", "--seconds", "30"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = lines.index(next(line for line in lines if "requests/s" in line))
    rows = [line.split() for line in lines[header + 1:]]
    assert [row[:2] for row in rows] == [["1", "3"], ["32", "3"]]
    assert all(float(value) > 0 for row in rows for value in row[2:])
