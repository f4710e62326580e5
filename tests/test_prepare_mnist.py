"""The idx -> TFRecord converter, on small idx files written here and on real MNIST if present."""

from pathlib import Path

import numpy as np
import pytest

from trainer.tools import prepare_mnist
from tests.conftest import write_idx
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
    assert capsys.readouterr().err.strip().startswith("error: --idx-dir:")


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
