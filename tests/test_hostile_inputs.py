"""Issue 22's hostile inputs (tests/corpus/hostile.py): each gets its one-line error from the
inspection every command shares, and end to end from the trainer, predict and verify; none
crashes a process or silently reads fewer examples."""

import subprocess
import sys

import pytest

from tests.conftest import FP32, REPO
from tests.corpus import hostile
from tests.exports import export_model
from trainer import data
from trainer.config import SAMPLE_TRAIN_FILES
from trainer.errors import TrainerError

ENTRIES = {entry.name: entry for entry in hostile.entries()}
DAMAGED_RECORDS = [name for name in ENTRIES if ".tfrecord" in name]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return hostile.write(tmp_path_factory.mktemp("corpus"))


def refusal(corpus, name: str, flag: str) -> str:
    with pytest.raises(TrainerError) as err:
        data.inspect_input((str(corpus[name]),), flag, (28, 28, 1), None)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("flag", ["--train-files", "--eval-files"])
@pytest.mark.parametrize("name", DAMAGED_RECORDS)
def test_damaged_records_are_refused_naming_the_file_and_byte(corpus, name, flag):
    assert refusal(corpus, name, flag) == f"{flag}: " + ENTRIES[name].error.format(
        path=corpus[name])


def test_a_latin_1_manifest_is_named_as_not_utf_8(corpus):
    assert refusal(corpus, "latin-1.csv", "--train-files") == (
        "--train-files: " + ENTRIES["latin-1.csv"].error.format(path=corpus["latin-1.csv"]))


@pytest.mark.parametrize("name", ["bom.csv", "bom.jsonl"])
def test_a_byte_order_mark_is_dropped_and_jsonl_stays_jsonl(corpus, name):
    source = data.inspect_input((str(corpus[name]),), "--train-files", (28, 28, 1), None)
    folder = corpus[name].parent / "images"
    assert source.uris == (str(folder / "a.png"), str(folder / "b.png"))
    assert (source.class_names, source.labels) == (("cat", "dog"), (0, 1))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_model(tmp_path_factory.mktemp("model"), "dnn")[1]


def command(kind: str, path, tmp_path, model_dir) -> list[str]:
    if kind == "trainer":
        return ["trainer.task", *FP32, "--train-files", SAMPLE_TRAIN_FILES, "--eval-files",
                str(path), "--model", "dnn", "--max-steps", "5", "--job-dir", str(tmp_path)]
    if kind == "predict":
        return ["trainer.predict", "--model-dir", model_dir, str(path), "--output-dir",
                str(tmp_path)]
    return ["trainer.tools.verify_dataset", str(path)]


@pytest.mark.parametrize("kind, name, origin", [
    ("trainer", "forged-length.tfrecord", "--eval-files"),
    ("trainer", "cut-gzip-50.tfrecord.gz", "--eval-files"),
    ("predict", "forged-length.tfrecord", "FILES"),
    ("predict", "wide-1x990000.png", "FILES"),
    ("verify", "forged-length.tfrecord", "patterns"),
])
def test_each_command_ends_with_one_error_line_instead_of_a_crash(corpus, model_dir, tmp_path,
                                                                  kind, name, origin):
    done = subprocess.run([sys.executable, "-m", *command(kind, corpus[name], tmp_path,
                                                          model_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    # TensorFlow's reader ended such a run with SIGSEGV (-11), or read fewer examples, exit 0.
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert done.stderr.splitlines()[-1] == "error: " + f"{origin}: " + ENTRIES[name].error.format(
        path=corpus[name])
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "checkpoints").exists() or not any(
        (tmp_path / "checkpoints").glob("ckpt-*"))
