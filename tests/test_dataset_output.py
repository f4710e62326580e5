"""trainer/tools/dataset_output.py and progress.py: staging, publishing, stale shards, progress
lines."""

import io
import os

import pytest

from trainer.cli import UsageError
from trainer.errors import TrainerError
from trainer.tools import dataset_output, progress
from trainer.tools.progress import Progress


def test_stale_shards_are_those_of_another_set_and_nothing_else():
    existing = ["train-00000-of-00003.tfrecord", "train-00001-of-00002.tfrecord",
                "eval-00000-of-00001.tfrecord.gz", "test-00000-of-00001.tfrecord",
                "labels.txt", "notes.md", "train-00000-of-00003.tfrecord.partial",
                "mytrain-00000-of-00001.tfrecord", ".incomplete"]
    new = ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
           "eval-00000-of-00001.tfrecord", "labels.txt"]
    assert dataset_output.stale(existing, new) == [
        "eval-00000-of-00001.tfrecord.gz", "test-00000-of-00001.tfrecord",
        "train-00000-of-00003.tfrecord"]


def test_the_removed_shards_are_named_in_one_line():
    assert dataset_output.Published([], []).lines() == []
    names = [f"train-0000{i}-of-00004.tfrecord" for i in range(4)]
    assert dataset_output.Published([], names).lines() == [
        "removed 4 shard(s) of an earlier conversion (train-00000-of-00004.tfrecord, "
        "train-00001-of-00004.tfrecord, train-00002-of-00004.tfrecord, ...)"]


def test_staging_removes_a_killed_runs_leftovers_and_its_own_after_a_failure(tmp_path):
    leftover = tmp_path / dataset_output.STAGING / "train-00000-of-00002.tfrecord"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half")
    with pytest.raises(TrainerError, match="boom"):
        with dataset_output.staging(str(tmp_path)) as staged:
            assert os.listdir(staged) == []
            (tmp_path / dataset_output.STAGING / "eval-00000-of-00001.tfrecord").write_bytes(b"x")
            raise TrainerError("boom")
    assert os.listdir(tmp_path) == []


def test_publish_moves_the_new_set_in_and_keeps_other_files(tmp_path):
    (tmp_path / "train-00000-of-00001.tfrecord.gz").write_bytes(b"old")
    (tmp_path / "README").write_text("mine")
    with dataset_output.staging(str(tmp_path)) as staged:
        for name in ("train-00000-of-00001.tfrecord", "labels.txt"):
            with open(os.path.join(staged, name), "w") as f:
                f.write(name)
        published = dataset_output.publish(staged, ["train-00000-of-00001.tfrecord",
                                                    "labels.txt"], str(tmp_path))
    assert published.removed == ["train-00000-of-00001.tfrecord.gz"]
    assert sorted(os.listdir(tmp_path)) == ["README", "labels.txt",
                                            "train-00000-of-00001.tfrecord"]


def test_an_output_that_cannot_be_a_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainerError, match=f"--output-dir: cannot write in {tmp_path}/file "):
        with dataset_output.staging(str(tmp_path / "file")):
            pass
    with pytest.raises(UsageError, match="s3://b/x is neither a local folder nor gs://"):
        dataset_output.check("s3://b/x")


def test_never_more_shards_than_records_and_sizes_differ_by_one_at_most(tmp_path):
    import tensorflow as tf

    paths = dataset_output.write_shards((bytes([i]) for i in range(7)), 7, str(tmp_path),
                                        "train", 3, progress=False)
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in paths]
    assert sizes == [2, 2, 3]
    assert [r.numpy() for p in paths for r in tf.data.TFRecordDataset(p)] == \
        [bytes([i]) for i in range(7)]
    few = dataset_output.write_shards([b"a", b"b"], 2, str(tmp_path / "few"), "eval", 8,
                                      progress=False)
    assert [os.path.basename(p) for p in few] == ["eval-00000-of-00002.tfrecord",
                                                  "eval-00001-of-00002.tfrecord"]


def test_progress_in_a_log_prints_every_interval_and_the_end(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    with Progress("train", 1000, "images", stream=stream) as bar:
        for _ in range(10):
            clock[0] += 5
            bar.update(50)
    assert stream.getvalue().splitlines() == [
        "train: 300/1,000 images (30%), 10 images/s, 70 s left",
        "train: 500/1,000 images (50%), 10 images/s, 50 s left"]
    stream = io.StringIO()
    with pytest.raises(TrainerError):
        with Progress("eval", 10, "images", stream=stream) as bar:
            bar.update(3)
            raise TrainerError("failed")
    assert stream.getvalue() == ""  # the error line is the last word, not a count
    with Progress("eval", 10, "images", enabled=False, stream=stream) as bar:
        bar.update(10)
    assert stream.getvalue() == ""
