"""The serving benchmark runs end to end: old and new server processes on 127.0.0.1, every
body at 1, 8 and 32 clients."""

import subprocess
import sys

from tests.conftest import REPO
from trainer.benchmarks.serving import BODIES, CLIENTS


def test_benchmark_compares_old_and_new_servers_for_every_body_and_client_count():
    done = subprocess.run([sys.executable, "-m", "trainer.benchmarks.serving", "--rounds", "1",
                           "--requests", "3", "--seconds", "30"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    servers = {line.split()[0]: line.split()[1:] for line in lines
               if line.split()[:1] in (["old"], ["new"])}
    assert set(servers) == {"old", "new"}
    assert all(float(value) > 0 for row in servers.values() for value in row[1:])
    header = lines.index(next(line for line in lines if "old req/s" in line))
    rows = [line.split() for line in lines[header + 1:]]
    assert [(row[0], int(row[1])) for row in rows] == [(b, c) for b in BODIES for c in CLIENTS]
    assert all(float(value) > 0 for row in rows for value in row[2:])
