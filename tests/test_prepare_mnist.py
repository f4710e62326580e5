"""The idx -> TFRecord converter, on small idx files written here and on real MNIST if present."""

from pathlib import Path

import numpy as np
import pytest

from trainer.tools import prepare_mnist
from tests.conftest import write_idx
from tests import test_gcs
from trainer.errors import TrainerError

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 30), ("t10k", 12)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (count, 28, 28)))
        # plain (uncompressed) labels: both spellings of the files are accepted
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count),
                  compress=False)
    return tmp_path


def read_back(pattern: str, compression: str):
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}
    files = sorted(tf.io.gfile.glob(pattern))
    images, labels = [], []
    for record in tf.data.TFRecordDataset(files, compression):
        parsed = tf.io.parse_single_example(record, spec)
        images.append(np.frombuffer(parsed["image"].numpy(), np.uint8))
        labels.append(int(parsed["label"]))
    return np.stack(images), np.array(labels)


def test_converts_every_example_in_order_into_the_requested_shards(idx_dir, tmp_path):
    out = tmp_path / "out"
    assert prepare_mnist.main(["--idx-dir", str(idx_dir), "--output-dir", str(out),
                               "--train-shards", "3", "--eval-shards", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "eval-00000-of-00001.tfrecord.gz", "train-00000-of-00003.tfrecord.gz",
        "train-00001-of-00003.tfrecord.gz", "train-00002-of-00003.tfrecord.gz"]
    images, labels = prepare_mnist.load_split(str(idx_dir), "train")
    got_images, got_labels = read_back(str(out / "train-*"), "GZIP")
    np.testing.assert_array_equal(got_images, images.reshape(30, -1))
    np.testing.assert_array_equal(got_labels, labels)


def test_limits_and_uncompressed_output(idx_dir, tmp_path):
    out = tmp_path / "out"
    prepare_mnist.main(["--idx-dir", str(idx_dir), "--output-dir", str(out), "--train-limit",
                        "7", "--eval-limit", "5", "--train-shards", "2", "--eval-shards", "1",
                        "--compression", "none"])
    assert len(read_back(str(out / "train-*.tfrecord"), "")[1]) == 7
    assert len(read_back(str(out / "eval-*.tfrecord"), "")[1]) == 5


def test_rejects_a_file_that_is_not_idx(tmp_path):
    (tmp_path / "x").write_bytes(b"not idx at all")
    with pytest.raises(TrainerError, match="not an idx file"):
        prepare_mnist.read_idx(str(tmp_path / "x"))


def test_rejects_a_short_idx_file(tmp_path):
    path = tmp_path / "short"
    write_idx(path, np.zeros((4, 28, 28)), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TrainerError, match="header promises 4x28x28"):
        prepare_mnist.read_idx(str(path))


def test_missing_idx_dir_is_one_line_error(tmp_path, capsys):
    assert prepare_mnist.main(["--idx-dir", str(tmp_path / "nope"), "--output-dir",
                               str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"error: --idx-dir: {tmp_path / 'nope'} does not exist\n"
    assert prepare_mnist.main(["--idx-dir", str(tmp_path), "--output-dir",
                               str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == (f"error: --idx-dir: {tmp_path}/train-images-idx3-ubyte"
                                       "(.gz) not found\n")


def test_local_inputs_are_checked_before_the_gs_output(idx_dir, tmp_path, monkeypatch, capsys):
    """No credentials here: the missing --idx-dir is named first, then the credentials."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    output = ["--output-dir", "gs://bkt/mnist"]
    assert prepare_mnist.main(["--idx-dir", str(tmp_path / "nope"), *output]) == 1
    assert capsys.readouterr().err == f"error: --idx-dir: {tmp_path / 'nope'} does not exist\n"
    assert prepare_mnist.main(["--idx-dir", str(idx_dir), *output]) == 1
    assert capsys.readouterr().err.startswith("error: --output-dir gs://bkt/mnist: no Google "
                                              "Cloud credentials found")


@pytest.mark.skipif(not MNIST.exists(), reason="../shared/data/mnist is not beside the repo")
def test_reads_the_real_mnist_files():
    images, labels = prepare_mnist.load_split(str(MNIST), "eval")
    assert images.shape == (10000, 28, 28, 1) and labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))


@pytest.mark.skipif(not MNIST.exists(), reason="../shared/data/mnist is not beside the repo")
def test_the_bundled_sample_is_exactly_what_the_converter_makes(tmp_path):
    from trainer.config import SAMPLE_DIR

    assert prepare_mnist.main(["--idx-dir", str(MNIST), "--output-dir", str(tmp_path),
                               "--train-shards", "2", "--eval-shards", "1",
                               "--train-limit", "10000", "--eval-limit", "2000"]) == 0
    bundled = sorted(SAMPLE_DIR.glob("*.tfrecord.gz"))
    assert [p.name for p in bundled] == sorted(p.name for p in tmp_path.iterdir())
    for path in bundled:
        assert path.read_bytes() == (tmp_path / path.name).read_bytes(), path.name


gcs = test_gcs.gcs  # the GCS emulator fixture, with bucket "bkt"


def fail_at(monkeypatch, call):
    """Makes the converter fail while writing its `call`-th record."""
    calls = []
    original = prepare_mnist._serialize

    def serialize(*args):
        calls.append(1)
        if len(calls) == call:
            raise TrainerError("injected failure")
        return original(*args)

    monkeypatch.setattr(prepare_mnist, "_serialize", serialize)


def test_a_failure_in_the_eval_split_leaves_no_train_shard(idx_dir, tmp_path, monkeypatch,
                                                           capsys):
    fail_at(monkeypatch, 35)  # 30 train records are written by then
    out = tmp_path / "out"
    assert prepare_mnist.main(["--idx-dir", str(idx_dir), "--output-dir", str(out),
                               "--train-shards", "3", "--eval-shards", "2"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: injected failure"
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_rerun_in_another_compression_leaves_only_the_new_shards(idx_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--idx-dir", str(idx_dir), "--output-dir", str(out), "--eval-shards", "1"]
    assert prepare_mnist.main([*args, "--train-shards", "3"]) == 0
    assert prepare_mnist.main([*args, "--train-shards", "2", "--compression", "none"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "eval-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord"]
    assert len(read_back(str(out / "train-*"), "")[1]) == 30
    assert "removed 4 shard(s) of an earlier conversion" in capsys.readouterr().out


def test_more_shards_than_records_writes_no_empty_shard(idx_dir, tmp_path):
    out = tmp_path / "out"
    assert prepare_mnist.main(["--idx-dir", str(idx_dir), "--output-dir", str(out),
                               "--train-limit", "3", "--train-shards", "8", "--eval-shards",
                               "1"]) == 0
    assert sorted(p.name for p in out.glob("train-*")) == [
        f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]


def test_gs_output_uploads_only_a_complete_set_and_replaces_an_earlier_one(
        idx_dir, gcs, monkeypatch, capsys):
    for name, value in gcs.env.items():
        monkeypatch.setenv(name, value)
    args = ["--idx-dir", str(idx_dir), "--output-dir", "gs://bkt/mnist", "--eval-shards", "1"]
    with monkeypatch.context() as patch:
        fail_at(patch, 35)
        assert prepare_mnist.main([*args, "--train-shards", "3"]) == 1
    assert gcs.list("bkt", "mnist/") == []
    assert prepare_mnist.main([*args, "--train-shards", "3"]) == 0
    assert prepare_mnist.main([*args, "--train-shards", "2"]) == 0
    assert sorted(gcs.list("bkt", "mnist/")) == [
        "mnist/eval-00000-of-00001.tfrecord.gz", "mnist/train-00000-of-00002.tfrecord.gz",
        "mnist/train-00001-of-00002.tfrecord.gz"]
    printed = capsys.readouterr().out
    assert "eval: 12 records of 28x28x1 in 1 shard(s) under gs://bkt/mnist (1 already there)" \
        in printed
    assert "removed 3 shard(s) of an earlier conversion" in printed
