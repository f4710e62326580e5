"""trainer/tools/prepare_images.py: folders and CIFAR batches -> encoded-image TFRecords."""

import pickle

import numpy as np
import pytest
import tensorflow as tf

from trainer.tools.prepare_images import main as prepare
from tests.image_data import NAMES, make_image_set
from trainer.data import encoded_records


def read_records(pattern):
    files = sorted(tf.io.gfile.glob(str(pattern)))
    return [tf.train.Example.FromString(r.numpy()).features.feature
            for r in tf.data.TFRecordDataset(files)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("folder"), train=60, evaluation=0, test=0,
                          seed=9).train_dir


def test_a_folder_splits_by_fraction_shrinks_and_writes_the_same_bytes_twice(folder, tmp_path,
                                                                            capsys):
    args = ["--input", str(folder), "--train-shards", "3", "--eval-shards", "1",
            "--eval-fraction", "0.25", "--max-size", "32"]
    assert prepare([*args, "--output-dir", str(tmp_path / "a")]) == 0
    assert prepare([*args, "--output-dir", str(tmp_path / "b")]) == 0
    assert "written under" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["eval-00000-of-00001.tfrecord", "labels.txt",
                     *[f"train-0000{i}-of-00003.tfrecord" for i in range(3)]]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train, evaluation = read_records(tmp_path / "a" / "train-*"), read_records(
        tmp_path / "a" / "eval-*")
    assert len(train) + len(evaluation) == 60 and 5 <= len(evaluation) <= 25
    class_names = (tmp_path / "a" / "labels.txt").read_text().split()
    assert set(class_names) <= set(NAMES) and class_names == sorted(class_names)
    for features in train + evaluation:
        label = features[encoded_records.LABEL].int64_list.value[0]
        assert class_names[label] == features[encoded_records.TEXT].bytes_list.value[0].decode()
        height = features[encoded_records.HEIGHT].int64_list.value[0]
        width = features[encoded_records.WIDTH].int64_list.value[0]
        assert max(height, width) <= 32
        image = tf.io.decode_image(features[encoded_records.ENCODED].bytes_list.value[0],
                                   expand_animations=False)
        assert image.shape[:2] == (height, width)


def write_pickle(path, value):
    with open(path, "wb") as f:
        pickle.dump(value, f)


@pytest.mark.parametrize("variant", ["cifar-10", "cifar-100"])
def test_cifar_python_batches(tmp_path, variant):
    rng = np.random.default_rng(0)
    folder = tmp_path / variant
    folder.mkdir()

    def batch(count):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        return data, [int(v) for v in rng.integers(0, 3, count)]

    if variant == "cifar-10":
        names = [b"airplane", b"automobile", b"bird"]
        write_pickle(folder / "batches.meta", {b"label_names": names})
        for i in range(1, 6):
            data, labels = batch(4)
            write_pickle(folder / f"data_batch_{i}", {b"data": data, b"labels": labels})
        data, labels = batch(6)
        write_pickle(folder / "test_batch", {b"data": data, b"labels": labels})
    else:
        names = [b"apple", b"aquarium_fish", b"baby"]
        write_pickle(folder / "meta", {b"fine_label_names": names})
        data, labels = batch(20)
        write_pickle(folder / "train", {b"data": data, b"fine_labels": labels})
        test_data, test_labels = batch(6)
        write_pickle(folder / "test", {b"data": test_data, b"fine_labels": test_labels})
    out = tmp_path / "out"
    assert prepare(["--cifar", str(folder), "--output-dir", str(out), "--train-shards", "2",
                    "--eval-shards", "1"]) == 0
    train, evaluation = read_records(out / "train-*"), read_records(out / "eval-*")
    assert (len(train), len(evaluation)) == (20, 6)
    assert (out / "labels.txt").read_text().split() == sorted(n.decode() for n in names)
    # Pixels survive: the first test image, planes R, G, B of 32x32, as the PNG stored.
    first = next(f for f in evaluation)
    image = tf.io.decode_png(first[encoded_records.ENCODED].bytes_list.value[0]).numpy()
    stored = {image.tobytes()}
    expected = {d.reshape(3, 32, 32).transpose(1, 2, 0).tobytes()
                for d in (test_data if variant == "cifar-100" else data)}
    assert stored <= expected


def test_bad_inputs(tmp_path, folder, capsys):
    assert prepare(["--cifar", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 1
    assert "holds neither CIFAR-10" in capsys.readouterr().err
    (tmp_path / "broken.csv").write_text(f"{next(folder.glob('*/*.png'))},one\n"
                                         f"{tmp_path}/missing.png,two\n")
    assert prepare(["--input", str(tmp_path / "broken.csv"), "--output-dir",
                    str(tmp_path / "o")]) == 1
    assert f"{tmp_path}/missing.png: cannot read" in capsys.readouterr().err
