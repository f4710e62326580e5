"""inspect_input's up-front checks and the streaming pipeline's output."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import example, synthetic_images, write_dataset, write_records
from trainer import data, records
from trainer.data import record_guard
from trainer.errors import TrainerError
from trainer.records import serialize_example

SHAPE = (28, 28, 1)


def inspect(pattern, shape=SHAPE, num_classes=10):
    return data.inspect_input((pattern,), "--train-files", shape, num_classes)


def good(label=3, size=784, **shape):
    dims = {"height": 28, "width": 28, "depth": 1, **shape}
    return serialize_example(bytes(size), label, dims["height"], dims["width"], dims["depth"])


@pytest.mark.parametrize("records, expected", [
    ([example(label=1)], "records lack the image feature"),
    ([example(image=bytes(784))], "records lack the 'label' feature"),
    ([good(size=700)], "image has 700 bytes; expected 784 for 28x28x1"),
    ([good(label=10)], r"label 10 is outside \[0, 10\) \(--num-classes\)"),
    ([good(label=-1)], r"label -1 is outside \[0, 10\)"),
    ([good(height=14, width=56)], "records declare images of 14x56x1; expected 28x28x1"),
    ([b"\x08\x01garbage"], "not a serialized tf.train.Example|not a tf.train.Example"),
    ([example(image_raw=bytes(100), label=1)], r"image has 100 bytes; expected 784 \(uint8\) or 3136"),
])
def test_bad_first_record_names_file_and_problem(tmp_path, records, expected):
    path = write_records(tmp_path / "bad.tfrecord", records)
    with pytest.raises(TrainerError, match=expected) as err:
        inspect(path)
    assert str(err.value).startswith(f"--train-files: {path}: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, expected", [
    (b"", "file is empty"),
    (b"\x01\x02\x03", r"truncated TFRecord file \(3 bytes\)"),
    (b"this is not a tfrecord file", "not a TFRecord file"),
])
def test_bad_file_bytes(tmp_path, content, expected):
    path = tmp_path / "f.tfrecord"
    path.write_bytes(content)
    with pytest.raises(TrainerError, match=expected):
        inspect(str(path))


def test_gzip_file_without_records(tmp_path):
    with pytest.raises(TrainerError, match="holds no records"):
        inspect(write_records(tmp_path / "e.gz", [], "GZIP"))


def test_pattern_matching_nothing(tmp_path):
    with pytest.raises(TrainerError, match=r"--train-files: no file matches '.*nothing-\*'"):
        inspect(str(tmp_path / "nothing-*"))


def test_every_pattern_must_match(tmp_path):
    path = write_records(tmp_path / "a.tfrecord", [good()])
    with pytest.raises(TrainerError, match="no file matches"):
        data.inspect_input((path, str(tmp_path / "b*")), "--eval-files", SHAPE, 10)


def test_mixed_schemas_are_rejected(tmp_path):
    write_records(tmp_path / "a.tfrecord", [good()])
    write_records(tmp_path / "b.tfrecord", [example(image_raw=bytes(3136), label=1)])
    with pytest.raises(TrainerError, match="use one schema"):
        inspect(str(tmp_path / "*.tfrecord"))


def test_inspection_detects_compression_per_file_and_dedups_patterns(tmp_path):
    write_records(tmp_path / "a.tfrecord", [good()])
    write_records(tmp_path / "b.tfrecord.gz", [good()], "GZIP")
    source = data.inspect_input((str(tmp_path / "*"), str(tmp_path / "a.*")), "--train-files",
                                SHAPE, 10)
    assert [p.rsplit("/", 1)[1] for p in source.files] == ["a.tfrecord", "b.tfrecord.gz"]
    assert source.compressions == ("", "GZIP")


def first_batches(source, batch_size, **kwargs):
    dataset = data.make_dataset(source, batch_size=batch_size, **kwargs)
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def rows(images, labels):
    """(label, pixels...) rows in a canonical order, to compare datasets as multisets."""
    table = np.concatenate([labels.reshape(-1, 1), np.round(images.reshape(len(images), -1) * 255)],
                           axis=1)
    return table[np.lexsort(table.T[::-1])]


def test_eval_pipeline_reads_everything_once_deterministically_normalized(tmp_path):
    pattern = write_dataset(tmp_path, 250, 3, "eval", seed=5)
    batches = first_batches(inspect(pattern), 100, training=False)
    assert [len(labels) for _, labels in batches] == [100, 100, 50]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.float32 and images.shape == (250, 28, 28, 1)
    assert images.min() >= 0.0 and images.max() == 1.0
    expected_images, expected_labels = synthetic_images(250, seed=5)
    np.testing.assert_array_equal(rows(images, labels), rows(expected_images / 255.0,
                                                             expected_labels))
    again = first_batches(inspect(pattern), 100, training=False)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in again]), labels)


def test_eval_steps_limits_batches(tmp_path):
    pattern = write_dataset(tmp_path, 250, 1, "eval")
    assert len(first_batches(inspect(pattern), 100, training=False, num_batches=2)) == 2


def test_classic_float32_schema_reads_like_the_current_one(tmp_path):
    current = write_dataset(tmp_path / "a", 64, 1, "eval", seed=3)
    classic = write_dataset(tmp_path / "b", 64, 1, "eval", seed=3, schema="classic")
    source = inspect(classic)
    assert (source.image_key, source.image_dtype) == ("image_raw", "float32")
    (a_images, a_labels), = first_batches(inspect(current), 64, training=False)
    (b_images, b_labels), = first_batches(source, 64, training=False)
    np.testing.assert_allclose(a_images, b_images, atol=1e-6)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_training_pipeline_repeats_shuffles_and_keeps_full_batches(tmp_path):
    pattern = write_dataset(tmp_path, 90, 2, "train", compression="GZIP")
    dataset = data.make_dataset(inspect(pattern), batch_size=30, training=True,
                                shuffle_buffer=50, seed=1)
    images = np.concatenate([b[0].numpy() for b in dataset.take(60)])  # 20 passes over 90
    assert images.shape == (1800, 28, 28, 1)
    # Synthetic images are unique noise, so pixels identify records.
    ids = [hash(image.tobytes()) for image in images]
    counts = np.unique(ids, return_counts=True)[1]
    assert len(counts) == 90 and counts.min() >= 18 and counts.max() <= 22
    assert ids[:90] != ids[90:180]


@pytest.mark.parametrize("num_files, pipelines", [(4, 2), (1, 2)])
def test_input_context_shards_files_or_records(tmp_path, num_files, pipelines):
    pattern = write_dataset(tmp_path, 80, num_files, "eval")
    source = inspect(pattern)
    seen = []
    for pipeline in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline, num_replicas_in_sync=pipelines)
        batches = first_batches(source, 20, training=False, input_context=context)
        assert all(len(labels) <= 10 for _, labels in batches)  # per-replica share of 20
        seen.append(sum(len(labels) for _, labels in batches))
    assert seen == [40, 40]


def assert_pipeline_error(source, expected):
    with pytest.raises((tf.errors.OpError, UnicodeDecodeError)) as raised:
        first_batches(source, 50, training=False)
    explained = data.explain_pipeline_error(raised.value, source)
    assert explained is not None, raised.value
    assert explained.args[0].startswith("--train-files: ")
    assert "\n" not in explained.args[0]
    assert expected in explained.args[0], explained.args[0]


@pytest.mark.parametrize("bad, expected", ids=[
    "label-range", "image-size", "declared-shape", "no-label", "label-type", "garbage"], argvalues=[
    (good(label=12), r"holds a label outside [0, 10) (--num-classes): [12]"),
    (good(size=700), "holds an image of the wrong size; expected 784 bytes for 28x28x1 uint8"),
    (good(height=14, width=56), "declares a shape other than 28x28x1"),
    (example(image=bytes(784)), "lacks the 'label' feature"),
    (example(image=bytes(784), label=1.5), "feature 'label' of a record holds float"),
    (b"\xff\xfe not a protocol buffer", "not a serialized tf.train.Example"),
])
def test_bad_record_deep_in_a_file_is_explained(tmp_path, bad, expected):
    records = [good()] * 30 + [bad] + [good()] * 30
    source = inspect(write_records(tmp_path / "f.tfrecord", records))
    assert_pipeline_error(source, expected)


def test_a_truncated_file_is_refused_up_front_naming_the_byte(tmp_path):
    path = tmp_path / "t.tfrecord"
    write_records(path, [good()] * 40)
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2 + 100])
    with pytest.raises(TrainerError) as err:
        inspect(str(path))
    # 40 records of 871 bytes (784 pixels and the Example's fields) and 16 of framing each.
    assert str(err.value) == (
        f"--train-files: {path} is corrupt or truncated (truncated record 20 at byte 17,740: it "
        "declares 871 bytes, the data ends 88 bytes after its header)"), err.value


def test_verified_files_are_remembered_beside_them_until_one_changes(tmp_path, monkeypatch):
    pattern = write_dataset(tmp_path, 90, 3, "eval")
    assert inspect(pattern).counts == (30, 30, 30)
    remembered = json.loads((tmp_path / record_guard.CACHE_NAME).read_text())["files"]
    assert sorted(remembered) == [f"eval-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert {entry["records"] for entry in remembered.values()} == {30}

    walked = []
    verify = records.verify
    monkeypatch.setattr(records, "verify", lambda raw, *args: walked.append(raw.name) or verify(
        raw, *args))
    record_guard.forget()  # what a new process knows
    assert inspect(pattern).size == 90 and walked == []
    # The cache file matches the pattern too: it is never taken for data.
    assert inspect(str(tmp_path / "*")).files == inspect(pattern).files

    damaged = tmp_path / "eval-00001-of-00003.tfrecord"
    damaged.write_bytes(damaged.read_bytes()[:-3])
    with pytest.raises(TrainerError, match=f"{damaged} is corrupt or truncated"):
        inspect(pattern)
    assert walked == [str(damaged)]


def test_where_nothing_can_be_remembered_files_are_verified_each_process(tmp_path, monkeypatch,
                                                                        caplog):
    pattern = write_dataset(tmp_path, 20, 1, "eval")
    monkeypatch.setattr(record_guard, "_cache_path",
                        lambda folder: str(tmp_path / "missing" / record_guard.CACHE_NAME))
    with caplog.at_level("INFO"):
        assert inspect(pattern).size == 20
    assert "could not remember the verified files" in caplog.text
    assert not (tmp_path / record_guard.CACHE_NAME).exists()
