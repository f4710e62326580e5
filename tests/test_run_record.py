"""A job dir knows what it holds: the run record beside the checkpoints, and what it stops."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FP32, run_task
from tests.image_data import make_image_set
from tests.test_training import one_line_error
from trainer import run_record, task
from trainer.config import config_from_flags
from trainer.data.vertex_env import DataFiles
from trainer.errors import TrainerError

QUICK = ("--model", "dnn", "--batch-size", "20", "--max-steps", "4", "--eval-every-steps", "4",
         "--seed", "1", *FP32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Digit photos of 20-60 px in ten class folders (train, eval)."""
    return make_image_set(tmp_path_factory.mktemp("photos"), train=60, evaluation=20, test=0)


def photo_flags(root: Path) -> tuple[str, ...]:
    return ("--train-files", str(root / "train"), "--eval-files", str(root / "eval"))


def run(*argv, environ=None):
    return task.run(config_from_flags([*QUICK, *argv], environ or {}))


def refusal(*argv) -> str:
    with pytest.raises(TrainerError) as info:
        run(*argv)
    message = str(info.value)
    assert "\n" not in message
    return message


def checkpoint_files(job: Path) -> list[str]:
    return sorted(p.name for p in (job / "checkpoints").glob("ckpt-*"))


# --- the record itself (pure) --------------------------------------------------------------------

def files(*train, bundled=False) -> DataFiles:
    return DataFiles(tuple(train), ("e",), None, (), bundled, "")


def test_the_record_names_the_training_data_absolutely_and_the_sample_by_name(tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_record.train_data(files("photos/", "gs://b/x/")) == [str(tmp_path / "photos"),
                                                                    "gs://b/x"]
    assert run_record.train_data(files("/any/sample-*", bundled=True)) == [run_record.BUNDLED]


def test_differences_name_each_defining_field_and_the_first_class_that_moved():
    saved = {"model": "cnn", "image_shape": [28, 28, 1], "train_data": ["/a"], "num_classes": 3,
             "class_names": ["cat", "dog", "eel"], "written": "then"}
    assert run_record.differences(saved, {**saved, "written": "now", "training_on": "x"}) == []
    assert run_record.differences(saved, {**saved, "class_names": ["cat", "dingo", "eel"]}) == [
        "the label map: class 1 was 'dog', now 'dingo'"]
    changed = {**saved, "model": "resnet20", "image_shape": [32, 32, 3], "train_data": ["/b"],
               "num_classes": 10, "class_names": None}
    assert run_record.differences(saved, changed) == [
        "--model: cnn then, resnet20 now",
        "--image-height/--image-width/--image-channels: 28x28x1 then, 32x32x3 now",
        "--train-files: /a then, /b now", "--num-classes: 3 then, 10 now",
        "the label map: 3 classes ('cat', 'dog', 'eel') then, integer labels (no class names) "
        "now"]


# --- runs ----------------------------------------------------------------------------------------

def test_photos_after_mnist_in_one_job_dir_stop_with_one_line_keeping_the_checkpoints(
        photos, tmp_path):
    job = tmp_path / "job"
    assert run("--job-dir", str(job)).step == 4  # the bundled MNIST sample
    saved = checkpoint_files(job)
    exports = sorted((job / "export").iterdir())
    result = run_task(*QUICK, *photo_flags(photos.root), "--job-dir", str(job))
    one_line_error(result, 1, f"--job-dir: {job / 'checkpoints'} holds checkpoints of another run",
                   f"--train-files: {run_record.BUNDLED} then, {photos.train_dir} now",
                   "the label map: integer labels (no class names) then, 10 classes ('eight'",
                   "--restart-from-scratch", f"--init-checkpoint {job / 'checkpoints'}")
    assert checkpoint_files(job) == saved and sorted((job / "export").iterdir()) == exports

    # Starting over there keeps the other run's checkpoints, moved aside, for a warm start.
    assert run(*photo_flags(photos.root), "--job-dir", str(job),
               "--restart-from-scratch").step == 4
    [moved] = (job / "checkpoints").glob("replaced-*")
    assert sorted(p.name for p in moved.glob("ckpt-*")) == saved
    assert json.loads((moved / "run.json").read_text())["train_data"] == [run_record.BUNDLED]
    record = json.loads((job / "checkpoints" / "run.json").read_text())
    assert record["class_names"] == sorted(record["class_names"]) and record["num_classes"] == 10
    warm = run("--job-dir", str(tmp_path / "warm"), "--init-checkpoint", str(moved))
    assert warm.step == 4


def test_a_renamed_class_folder_is_an_error_not_shifted_classes(photos, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(photos.root, root)
    job = tmp_path / "job"
    run(*photo_flags(root), "--job-dir", str(job))
    for split in ("train", "eval"):
        if (root / split / "eight").exists():
            (root / split / "eight").rename(root / split / "ocho")
    assert refusal(*photo_flags(root), "--job-dir", str(job)).endswith(
        f"--job-dir: {job / 'checkpoints'} holds checkpoints of another run (the label map: "
        "class 0 was 'eight', now 'five'); rerun with that run's flags to resume it, or pass "
        "--restart-from-scratch to start over there (the checkpoints are moved aside, not "
        f"deleted), or warm start from them with a new --job-dir and --init-checkpoint "
        f"{job / 'checkpoints'}")
    # Without the record nothing says what the classes meant: an error too, not a new mapping.
    (job / "checkpoints" / "run.json").unlink()
    assert "holds checkpoints but no run record (run.json" in refusal(
        *photo_flags(root), "--job-dir", str(job))
    assert len(checkpoint_files(job)) == 2  # ckpt-4's index and data, untouched


def test_the_same_run_resumes_and_a_record_without_checkpoints_is_replaced(photos, tmp_path):
    job = tmp_path / "job"
    run(*photo_flags(photos.root), "--job-dir", str(job))
    result = run(*photo_flags(photos.root), "--job-dir", str(job), "--max-steps", "6",
                 "--learning-rate", "0.01", "--batch-size", "10", "--augment")
    assert result.step == 6
    for path in (job / "checkpoints").glob("ckpt-*"):
        path.unlink()
    assert run("--job-dir", str(job)).step == 4  # nothing to protect: the record is replaced
    assert json.loads((job / "checkpoints" / "run.json").read_text())["class_names"] is None


def test_the_readme_commands_in_one_directory_never_share_checkpoints(photos, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    mnist = run()
    photo = run(*photo_flags(photos.root))
    runs = sorted(p.name for p in (tmp_path / "trainer-output").iterdir())
    assert len(runs) == 2 and {r.split("-")[0] for r in runs} == {"dnn"}
    assert Path(mnist.export_path).parents[1] != Path(photo.export_path).parents[1]
    again = run("--max-steps", "6")
    assert again.step == 6 and Path(again.export_path).parents[1] == Path(
        mnist.export_path).parents[1]


@pytest.mark.parametrize("layout", ["folder", "jsonl"])
def test_a_class_name_labels_txt_cannot_hold_is_refused_before_training(tmp_path, photos,
                                                                        layout):
    if layout == "folder":
        root = tmp_path / "photos"
        shutil.copytree(photos.train_dir, root)
        (root / "one").rename(root / "un 1 ")
        train, expected = str(root), "the class name 'un 1 ' starts or ends with whitespace"
    else:
        lines = photos.jsonl.read_text().splitlines()
        item = json.loads(lines[0])
        item["classificationAnnotation"]["displayName"] = "two\nlines"
        manifest = tmp_path / "data.jsonl"
        manifest.write_text("\n".join([json.dumps(item), *lines[1:]]) + "\n")
        train = str(manifest)
        expected = f"{manifest} line 1: the class name 'two\\nlines' holds a line break"
    result = run_task(*QUICK, "--train-files", train, "--eval-files", train,
                      "--job-dir", str(tmp_path / "job"))
    one_line_error(result, 1, expected, "rename that class")
    assert not (tmp_path / "job" / "checkpoints").exists()
