"""The `vertex-trainer` command: each subcommand's --help answers without TensorFlow, and an
unknown command is one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.commands import COMMANDS

_PROBE = """
import atexit, sys
atexit.register(lambda: print("TENSORFLOW" if "tensorflow" in sys.modules else "NO-TF",
                              file=sys.stderr))
from trainer.commands import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_answers_help_without_tensorflow(name):
    done = _run(name, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"vertex-trainer {name}" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "NO-TF", done.stderr[-2000:]


def test_no_command_is_train_and_help_lists_the_commands():
    listing = _run("--help")
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in COMMANDS)
    flags_first = _run("--max-steps", "0")
    assert flags_first.returncode == 2
    assert flags_first.stderr.strip().splitlines()[-2] == \
        "error: --max-steps must be positive and at most 2^53 = 9,007,199,254,740,992, got 0"


def test_an_unknown_command_is_one_line_with_the_choices():
    done = _run("trian")
    assert done.returncode == 2
    assert "error: unknown command 'trian'; expected one of launch, train, predict" in done.stderr


def test_every_entry_point_ends_through_trainer_cli():
    # Only run_cli makes a failure one `error: ...` line, last, with the right exit code; issue
    # 22 found scripts printing tracebacks or two-line argparse output instead.
    repo = Path(__file__).resolve().parent.parent
    through = ("run_cli(", "run_command(", "run_benchmark(", "from trainer.commands import cli")
    scripts = [*repo.glob("trainer/**/*.py"), *repo.glob("hptuning/**/*.py"),
               *repo.glob("scripts/*.py")]
    entry_points = [path for path in scripts if path.name == "__main__.py"
                    or path.parent.name == "scripts"
                    or 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")]
    assert len(entry_points) > 30
    bypassing = [str(path.relative_to(repo)) for path in entry_points
                 if not any(call in path.read_text(encoding="utf-8") for call in through)]
    assert bypassing == []


def test_every_usage_line_naming_a_command_names_a_registered_one():
    # `python -m trainer.benchmarks.record_guard --help` called itself `vertex-trainer
    # benchmark-record-guard`, which the command answered with "unknown command".
    repo = Path(__file__).resolve().parent.parent
    named = {match: str(path.relative_to(repo))
             for path in [*repo.glob("trainer/**/*.py"), *repo.glob("hptuning/**/*.py")]
             for match in re.findall(r'prog="vertex-trainer ([\w-]+)"',
                                     path.read_text(encoding="utf-8"))}
    assert len(named) > 10
    assert {name: path for name, path in named.items() if name not in COMMANDS} == {}
