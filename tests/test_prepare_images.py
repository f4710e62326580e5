"""trainer/tools/prepare_images.py: folders and CIFAR batches -> encoded-image TFRecords."""

import pickle
import re

import numpy as np
import pytest
import tensorflow as tf

from trainer.tools.prepare_images import main as prepare
from tests import test_gcs
from tests.conftest import REPO
from tests.image_data import NAMES, make_image_set
from trainer.data import encoded_records


gcs = test_gcs.gcs  # the GCS emulator fixture, with bucket "bkt"


def read_records(pattern):
    files = sorted(tf.io.gfile.glob(str(pattern)))
    return [tf.train.Example.FromString(r.numpy()).features.feature
            for r in tf.data.TFRecordDataset(files)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("folder"), train=60, evaluation=0, test=0,
                          seed=9).train_dir


def test_a_folders_split_is_the_same_wherever_the_folder_is(folder, tmp_path):
    # The split hashed the absolute path: the same photos elsewhere (another tmp dir, a copy on
    # gs://) split differently, and 60 images once held out none (a CI failure).
    import shutil

    from trainer.tools.prepare_images import list_images

    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "photos")

    def splits(root):
        return sorted((str(e.uri)[len(str(root)):], e.split) for e in list_images(str(root), 0.25))

    assert splits(folder) == splits(moved)
    assert {split for _, split in splits(folder)} == {"train", "eval"}


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


def test_local_inputs_are_checked_before_the_gs_output(tmp_path, monkeypatch, capsys):
    """No credentials here: a missing input is named first."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    output = ["--output-dir", "gs://bkt/data"]
    assert prepare(["--cifar", str(tmp_path / "cifar-10-batches-py"), *output]) == 1
    assert capsys.readouterr().err.startswith(
        f"error: --cifar: {tmp_path / 'cifar-10-batches-py'} does not exist")
    assert prepare(["--input", str(tmp_path / "photos"), *output]) == 1
    assert capsys.readouterr().err.startswith(f"error: --input: cannot read {tmp_path}/photos")
    assert prepare(["--cifar", str(tmp_path), *output]) == 1
    assert "holds neither CIFAR-10" in capsys.readouterr().err


def test_bad_inputs(tmp_path, folder, capsys):
    assert prepare(["--cifar", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 1
    assert "holds neither CIFAR-10" in capsys.readouterr().err
    (tmp_path / "broken.csv").write_text(f"{next(folder.glob('*/*.png'))},one\n"
                                         f"{tmp_path}/missing.png,two\n")
    assert prepare(["--input", str(tmp_path / "broken.csv"), "--output-dir",
                    str(tmp_path / "o")]) == 1
    assert f"{tmp_path}/missing.png: cannot read" in capsys.readouterr().err


def last_error(capsys) -> str:
    """The one-line error (the last line on stderr); the line must be the only error line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), lines[-5:]
    assert not any("Traceback" in line for line in lines), lines
    return lines[-1][len("error: "):]


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def cifar10(folder, names=(b"airplane", b"automobile", b"bird"), **overrides):
    """A CIFAR-10 python-version folder of tiny batches; `overrides` replace whole files."""
    rng = np.random.default_rng(1)
    folder.mkdir()
    files = {"batches.meta": {b"label_names": list(names)}}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[name] = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                       b"labels": [int(v) for v in rng.integers(0, 3, 4)]}
    files.update(overrides)
    for name, value in files.items():
        write_pickle(folder / name, value)
    return folder


class WritesAMarker:
    """What a hostile `meta` pickle holds: unpickling it calls io.open(marker, "w")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_that_would_run_code_is_refused_by_name(tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = cifar10(tmp_path / "c", **{"batches.meta": {b"label_names": WritesAMarker(marker)}})
    out = tmp_path / "out"
    assert prepare(["--cifar", str(folder), "--output-dir", str(out)]) == 1
    assert not marker.exists()
    assert last_error(capsys) == (
        f"--cifar: {folder}/batches.meta refers to io.open, which CIFAR batches never hold; "
        "refused (only dicts, lists, numbers, text and numpy arrays are read)")
    assert files_under(out) == []


def good_data(count=4):
    return np.zeros((count, 3072), np.uint8)


@pytest.mark.parametrize("file, value, message", [
    ("data_batch_2", [good_data(), [0, 1, 2, 0]],
     "holds a list; expected a dict with 'data' and 'labels'"),
    ("data_batch_2", {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0, 1, 2, 0]},
     "field 'data' is a uint8 array of shape (4, 3000); expected one row of 3072 bytes (3 planes of "
     "32x32) per image"),
    ("data_batch_2", {b"data": good_data().tolist(), b"labels": [0, 1, 2, 0]},
     "field 'data' is a list; expected a numpy array of one row of 3072 bytes per image"),
    ("data_batch_2", {b"data": good_data().astype(np.int32) + 300, b"labels": [0, 1, 2, 0]},
     "field 'data' holds values up to 300; expected bytes 0..255"),
    ("data_batch_2", {b"data": good_data(), b"labels": [0, 1, 2]},
     "field 'labels' holds 3 labels for the 4 images of 'data'"),
    ("data_batch_2", {b"data": good_data(), b"labels": [0, b"cat", 2, 1]},
     "field 'labels' item 1 is b'cat'; expected a class index"),
    ("test_batch", {b"data": good_data(3), b"labels": [-1, -2, -3]},
     "field 'labels' item 0 is -1; expected 0..2 (the 3 classes named in"),
    ("data_batch_5", {b"data": good_data(), b"labels": [0, 1, 3, 1]},
     "field 'labels' item 2 is 3; expected 0..2 (the 3 classes named in"),
    ("batches.meta", {b"num_cases_per_batch": 4},
     "lacks 'label_names'; expected the list of class names"),
    ("batches.meta", {b"label_names": [b"cat", b"dog", b"cat"]},
     "field 'label_names' names 'cat' twice; expected distinct class names"),
])
def test_cifar_batches_off_the_format_are_one_line_errors(tmp_path, capsys, file, value,
                                                          message):
    folder = cifar10(tmp_path / "c", **{file: value})
    out = tmp_path / "out"
    assert prepare(["--cifar", str(folder), "--output-dir", str(out)]) == 1
    error = last_error(capsys)
    assert error.startswith(f"--cifar: {folder}/{file} "), error
    assert message in error, error
    assert files_under(out) == []


def hash_order(paths):
    """The converter's write order (sorted by a hash of each path)."""
    import hashlib

    return sorted(paths, key=lambda p: hashlib.sha256(str(p).encode()).digest())


def test_a_failure_midway_leaves_nothing_a_glob_picks_up_and_a_rerun_completes(
        folder, tmp_path, capsys):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    last = hash_order(list(photos.glob("*/*")))[-1]  # in the last of three train shards
    good = last.read_bytes()
    last.write_bytes(good[:20])
    out = tmp_path / "out"
    args = ["--input", str(photos), "--output-dir", str(out), "--train-shards", "3",
            "--eval-fraction", "0"]
    assert prepare(args) == 1
    assert last_error(capsys).startswith(f"{last}: cannot decode the image")
    assert files_under(out) == []
    last.write_bytes(good)
    assert prepare(args) == 0
    assert files_under(out) == ["labels.txt"] + [f"train-0000{i}-of-00003.tfrecord"
                                                  for i in range(3)]
    assert len(read_records(out / "train-*")) == 60


_KILLED_AT = """
import os, signal, sys
from trainer.tools import prepare_images
calls = 0
original = prepare_images.serialize
def serialize(*args):
    global calls
    calls += 1
    if calls == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args)
prepare_images.serialize = serialize
sys.exit(prepare_images.main(sys.argv[2:]))
"""


def test_a_run_killed_midway_leaves_no_shard_and_the_rerun_removes_its_leftovers(folder,
                                                                                 tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    args = ["--input", str(folder), "--output-dir", str(out), "--train-shards", "3",
            "--eval-fraction", "0"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT, "45", *args],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]
    assert prepare(args) == 0
    assert files_under(out) == ["labels.txt"] + [f"train-0000{i}-of-00003.tfrecord"
                                                  for i in range(3)]


def test_a_rerun_with_fewer_shards_removes_the_earlier_ones(folder, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--input", str(folder), "--output-dir", str(out), "--eval-fraction", "0.25"]
    assert prepare([*base, "--train-shards", "3", "--eval-shards", "2"]) == 0
    assert prepare([*base, "--train-shards", "2", "--eval-shards", "1"]) == 0
    assert files_under(out) == ["eval-00000-of-00001.tfrecord", "labels.txt",
                                "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert len(read_records(out / "train-*")) + len(read_records(out / "eval-*")) == 60
    assert ("removed 5 shard(s) of an earlier conversion (eval-00000-of-00002.tfrecord, "
            "eval-00001-of-00002.tfrecord, train-00000-of-00003.tfrecord, ...)"
            ) in capsys.readouterr().out


@pytest.fixture(scope="module")
def split_root(tmp_path_factory):
    """ROOT/{train,eval,test}/CLASS/image (plus the set's CSV and JSONL files at ROOT)."""
    return make_image_set(tmp_path_factory.mktemp("split"), train=30, evaluation=12, test=9,
                          seed=4).root


def class_counts(root):
    return {split.name: {c.name: len(list(c.iterdir())) for c in split.iterdir()}
            for split in root.iterdir() if split.is_dir()}


@pytest.mark.parametrize("eval_folder", ["eval", "val"])
def test_split_folders_become_splits_and_the_summary_counts_each_class(split_root, tmp_path,
                                                                       capsys, eval_folder):
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(split_root, root)
    if eval_folder != "eval":
        (root / "eval").rename(root / eval_folder)
    counts = class_counts(root)
    out = tmp_path / "out"
    assert prepare(["--input", str(root), "--output-dir", str(out), "--train-shards", "2",
                    "--eval-shards", "1", "--test-shards", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"split folders of {root}: train -> train, {eval_folder} -> eval, test -> test" in printed
    for split, folder in (("train", "train"), ("eval", eval_folder), ("test", "test")):
        records = read_records(out / f"{split}-*")
        assert len(records) == sum(counts[folder].values())
        texts = [f[encoded_records.TEXT].bytes_list.value[0].decode() for f in records]
        assert {name: texts.count(name) for name in set(texts)} == counts[folder]
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["class", "train", "eval",
                                                                        "test"])
    names = sorted(set().union(*counts.values()))
    for name, line in zip(names, lines[header + 1:]):
        assert line.split() == [name] + [str(counts[f].get(name, 0))
                                         for f in ("train", eval_folder, "test")]
    assert lines[header + 1 + len(names)].split() == ["all", "30", "12", "9"]


def test_split_folders_mixed_with_class_folders_or_with_eval_fraction_are_refused(
        split_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(split_root, root)
    assert prepare(["--input", str(root), "--output-dir", str(tmp_path / "o"),
                    "--eval-fraction", "0.2"]) == 2
    assert last_error(capsys) == (
        f"--eval-fraction: every image of {root} has its split already (split folders or "
        "ml_use); the fraction splits only images without one")
    shutil.copytree(root / "train" / "one", root / "one")
    assert prepare(["--input", str(root), "--output-dir", str(tmp_path / "o")]) == 1
    assert last_error(capsys) == (
        f"--input: {root} mixes split folders (eval, test, train) with other folders (one); "
        "expected ROOT/SPLIT/CLASS/image (SPLIT one of train, validation, val, eval, test) or "
        "ROOT/CLASS/image")
    assert files_under(tmp_path / "o") == []


def test_runs_without_tqdm(folder, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert prepare(["--input", str(folder), "--output-dir", str(tmp_path / "out")]) == 0
    assert re.search(r"^train: \d+/\d+ images", capsys.readouterr().err, re.M)


def test_gs_output_without_google_cloud_storage_is_one_line_before_any_work(folder, tmp_path):
    import subprocess
    import sys

    blocked = ("import sys; sys.modules['google.cloud.storage'] = None; "
               "from trainer.commands import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", blocked, "prepare", "--input", str(folder),
                           "--output-dir", "gs://bucket/photos"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: --output-dir gs://bucket/photos: uploading needs the google-cloud-storage "
        "package; install it with pip install 'vertex-trainer[cloud]'"]


def test_gs_output_is_uploaded_once_complete_and_a_missing_bucket_fails_first(
        folder, gcs, monkeypatch, capsys):
    for name, value in gcs.env.items():
        monkeypatch.setenv(name, value)
    assert prepare(["--input", str(folder), "--output-dir", "gs://nobucket/photos"]) == 1
    assert last_error(capsys) == ("--output-dir gs://nobucket/photos: bucket gs://nobucket does "
                                  "not exist")
    args = ["--input", str(folder), "--output-dir", "gs://bkt/photos", "--train-shards", "2",
            "--eval-shards", "1"]
    assert prepare(args) == 0
    assert sorted(gcs.list("bkt", "photos/")) == [
        "photos/eval-00000-of-00001.tfrecord", "photos/labels.txt",
        "photos/train-00000-of-00002.tfrecord", "photos/train-00001-of-00002.tfrecord"]
    assert gcs.read("bkt", "photos/labels.txt").decode().split() == sorted(NAMES)
    assert prepare(args) == 0
    assert "(4 file(s) already there unchanged)" in capsys.readouterr().out
