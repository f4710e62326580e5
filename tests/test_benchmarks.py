"""`vertex-trainer benchmark`: one-line argument errors, the BENCHMARKS.md merge, and smoke runs
of sections from an installed copy of the package, outside the checkout.

The smoke runs check that the sections work (child processes, tables, the merge), not their
numbers: `--smoke` measures a few steps.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from trainer.benchmarks import markdown, runner, training
from trainer.benchmarks.sections import photos
from trainer.config import SAMPLE_EVAL_FILES, SAMPLE_TRAIN_FILES
from trainer.tools.digit_photos import NAMES

HARDWARE = "Some CPU, 2 cores (AVX-512, no AMX-BF16), no GPU"


@pytest.mark.parametrize("argv, message", [
    (["--only", "jpeg,gpu"], "error: --only 'jpeg,gpu': expected sections among estimator, "
                             "breakdown, pipeline, jpeg, photos, resnet, speed, accuracy, "
                             "resources\n"),
    (["--only", "pipeline"], "error: section pipeline needs --train-files (see --help)\n"),
    (["--only", "resnet", "--train-files", "{data}/*"],
     "error: section resnet needs --eval-files (see --help)\n"),
    (["--train-files", "/nowhere/train-*", "--eval-files", "/nowhere/eval-*"],
     "error: --train-files '/nowhere/train-*' matches no file\n"),
    (["--smoke", "--rounds", "2"], "error: unrecognized arguments: --rounds 2 (see --help)\n"),
])
def test_argument_errors_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "train-0").write_bytes(b"")
    argv = [arg.format(data=tmp_path) for arg in argv]
    assert training.main(argv) == 2
    assert capsys.readouterr().err == message


def test_every_registered_section_is_a_module_with_a_run_function():
    for name in training.SECTIONS:
        module = importlib.import_module(f"trainer.benchmarks.sections.{name}")
        assert callable(module.run), name


def test_the_photo_folders_hold_every_digit_at_the_smoke_budget(tmp_path):
    # The sample's first 20 eval digits hold no 8: the first `limit` records as they lay made a
    # test folder without "eight", and the photo recipe failed on it.
    counts = photos.write_photos(runner.SMOKE, SAMPLE_TRAIN_FILES, SAMPLE_EVAL_FILES,
                                 str(tmp_path))
    assert counts == {"train": runner.SMOKE.photo_train, "test": runner.SMOKE.photo_test}
    for split in counts:
        assert sorted(os.listdir(tmp_path / split)) == sorted(NAMES), split


def table(title: str, value: str) -> str:
    return f"### {title}\n\n| a | b |\n|---|---|\n| x | {value} |"


EXISTING = f"""# Benchmarks

An old preface.

## Another CPU, 8 cores, no GPU

{table("Input pipeline (batch 100, training path)", "other machine")}

## {HARDWARE}

TensorFlow 2.21.0; an intro written by an earlier run.

{table("Input pipeline (batch 100, training path)", "old")}

Notes on this run (written by hand).

{table("Resources", "kept")}
"""


def test_merge_replaces_this_machines_tables_by_heading_and_keeps_the_rest():
    new = "\n\n".join([table("Input pipeline (batch 64, a changed detail)", "new"),
                       table("Encoded-JPEG input pipeline (6 JPEGs)", "added")])
    merged = markdown.merge(EXISTING, HARDWARE, new)
    assert merged.startswith(markdown.PREFACE)
    other, ours = merged.split(f"## {HARDWARE}\n")
    assert "other machine" in other and "## Another CPU, 8 cores, no GPU" in other
    assert "an intro written by an earlier run" in ours
    # Replaced in place (its hand-written notes went with it), kept, then added.
    assert ours.index("| x | new |") < ours.index("| x | kept |") < ours.index("| x | added |")
    assert "| x | old |" not in ours and "Notes on this run" not in ours
    assert markdown.merge(merged, HARDWARE, new) == merged  # a rerun changes nothing


def test_merge_into_a_new_file_or_a_new_machine():
    merged = markdown.merge("", HARDWARE, table("Resources", "1"))
    assert merged == f"{markdown.PREFACE}\n## {HARDWARE}\n\n{table('Resources', '1')}\n"
    again = markdown.merge(merged, "Other CPU", table("Resources", "2"))
    assert again.count("### Resources") == 2 and again.endswith("| x | 2 |\n")


def test_the_shipped_benchmarks_file_merges_one_section_in_place():
    existing = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    hardware = next(line[3:] for line in existing.splitlines()
                    if line.startswith("## Intel(R) Xeon(R) Processor"))
    merged = markdown.merge(existing, hardware, table("Encoded-JPEG input pipeline (x)", "new"))
    def headings(text):  # without their details: the replaced table's changed
        return [line.split(" (")[0] for line in text.splitlines() if line.startswith("#")]

    assert headings(merged) == headings(existing)
    assert merged.count("| x | new |") == 1 and "| trainer / keras (target >= 2)" not in merged


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package pip-installed into a directory of its own (no tests/, no checkout)."""
    target = tmp_path_factory.mktemp("site-packages")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-index", "--no-build-isolation", "--target", str(target),
                           str(REPO)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return target


def test_sections_run_from_the_installed_package_and_merge_into_the_output(
        installed, dataset, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}  # children inherit it
    where = subprocess.run([sys.executable, "-c", "import trainer; print(trainer.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(installed))
    smoke = f"{markdown.hardware()} - smoke run, numbers meaningless"
    (work / "BENCHMARKS.md").write_text(
        f"# Benchmarks\n\n## {smoke}\n\n{table('Resources', 'kept')}\n")
    done = subprocess.run(
        [str(installed / "bin" / "vertex-trainer"), "benchmark", "--smoke", "--only",
         "jpeg,pipeline,speed", "--train-files", dataset[0], "--output", "BENCHMARKS.md"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    written = (work / "BENCHMARKS.md").read_text()
    for heading in ("### Encoded-JPEG input pipeline (6 JPEGs of 500x375 -> 224x224x3, "
                    "batch 3)", "### Input pipeline (batch 100, training path)",
                    "### Training examples/s (steady state)"):
        assert heading in done.stdout and written.count(heading) == 1, heading
    assert "| dnn | 32 | " in written  # the smoke budget's one model and batch
    assert "| x | kept |" in written
    assert "`vertex-trainer benchmark --only speed`" in written
    assert done.stderr.strip().splitlines()[-1].endswith("wrote BENCHMARKS.md")


def test_a_failing_measurement_is_one_line_naming_its_log(installed, tmp_path):
    # Not TFRecords: the pipeline's child process fails on them with the trainer's error.
    (tmp_path / "train-0.tfrecord").write_bytes(b"not a record")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-m", "trainer", "benchmark", "--smoke", "--only",
                           "pipeline", "--train-files", str(tmp_path / "train-*")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: benchmark step trainer.benchmarks.sections.pipeline:measure "
                           "failed (exit 1): ")
    log = last.rsplit("(its output: ", 1)[1].rstrip(")")
    assert os.path.exists(log)
    os.remove(log)
