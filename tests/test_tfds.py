"""A TFDS-prepared dataset folder as --train-files/--eval-files/--test-files and in predict.

The folder is written here in the layout TFDS 4 writes (~/tensorflow_datasets/NAME/VERSION:
dataset_info.json, features.json, label.labels.txt, NAME-SPLIT.tfrecord-00000-of-0000N shards of
Examples with a PNG `image` and an int64 `label`), from the learnable synthetic digits.
"""

import json
import re

import numpy as np
import pytest

from tests.conftest import FP32, example, synthetic_images, write_records
from tests.exports import png
from tests.image_data import NAMES
from trainer import data, predict, task
from trainer.config import config_from_flags
from trainer.data import tfds
from trainer.errors import TrainerError

FEATURES = {
    "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
    "featuresDict": {"features": {
        "image": {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
                  "image": {"shape": {"dimensions": ["28", "28", "1"]}, "dtype": "uint8",
                            "encodingFormat": "png"}},
        "label": {"pythonClassName":
                  "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
                  "classLabel": {"numClasses": "10"}}}}}


def info(splits: dict[str, list[int]]) -> dict:
    return {"name": "digits", "version": "1.0.0", "fileFormat": "tfrecord", "splits": [
        {"name": split, "numBytes": "1", "shardLengths": [str(n) for n in lengths],
         "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}
        for split, lengths in splits.items()]}


def write_tfds(root, splits: dict[str, list[int]], seed: int = 0):
    """The dataset folder; returns it and each split's labels in shard order."""
    root.mkdir(parents=True)
    (root / "dataset_info.json").write_text(json.dumps(info(splits)))
    (root / "features.json").write_text(json.dumps(FEATURES))
    (root / "label.labels.txt").write_text("\n".join(NAMES) + "\n")
    truth = {}
    for offset, (split, lengths) in enumerate(splits.items()):
        pixels, labels = synthetic_images(sum(lengths), seed + offset)
        truth[split] = labels
        start = 0
        for index, length in enumerate(lengths):
            write_records(root / f"digits-{split}.tfrecord-{index:05d}-of-{len(lengths):05d}",
                          [example(image=png(image), label=int(label)) for image, label in
                           zip(pixels[start:start + length], labels[start:start + length])])
            start += length
    return root, truth


def test_the_layout_is_read_from_the_two_json_files():
    layout = tfds.parse_layout(json.dumps(info({"train": [5, 5], "test": [3]})),
                               json.dumps(FEATURES), "X")
    assert layout == tfds.Layout("digits", "1.0.0", {
        "train": ("digits-train.tfrecord-00000-of-00002", "digits-train.tfrecord-00001-of-00002"),
        "test": ("digits-test.tfrecord-00000-of-00001",)}, "image", "label", 10)


@pytest.mark.parametrize("change, message", [
    (lambda i, f: i.update(fileFormat="array_record"), "stored as array_record; only tfrecord"),
    (lambda i, f: f["featuresDict"]["features"].update(other={"classLabel": {}}),
     "expected one Image and one ClassLabel feature; features.json has 1 and 2 (image, label, "
     "other)"),
    (lambda i, f: f["featuresDict"]["features"]["label"].update(classLabel={}),
     "the ClassLabel 'label' has no numClasses"),
    (lambda i, f: i.update(splits=[]), "dataset_info.json lists no splits"),
    (lambda i, f: f.pop("featuresDict"), "features.json has no featuresDict.features"),
])
def test_layouts_that_cannot_be_read_are_one_line_errors(change, message):
    dataset_info, features = info({"train": [5]}), json.loads(json.dumps(FEATURES))
    change(dataset_info, features)
    with pytest.raises(TrainerError, match=re.escape(message)):
        tfds.parse_layout(json.dumps(dataset_info), json.dumps(features), "X")


def test_each_flag_reads_its_split_of_the_folder_and_shards_read_as_files(tmp_path):
    root, truth = write_tfds(tmp_path / "digits" / "1.0.0", {"train": [60, 40], "test": [30]})
    config = config_from_flags(["--train-files", str(root), "--eval-files", str(root),
                                "--test-files", f"{root}/digits-test.tfrecord-*"], {})
    plan = data.resolve(config.data)
    assert (plan.class_names, plan.num_classes) == (tuple(NAMES), 10)
    assert [data.describe(s) for s in plan.sources()] == [
        "100 examples in the 'train' split of TFDS digits 1.0.0 from --train-files",
        "30 examples in the 'test' split of TFDS digits 1.0.0 from --eval-files",
        "30 examples in 1 shard(s) of TFDS digits 1.0.0 from --test-files"]
    (_, labels), = data.make_dataset(plan.eval, batch_size=30, training=False)
    np.testing.assert_array_equal(labels.numpy(), truth["test"])


def test_a_validation_split_is_what_eval_files_read(tmp_path):
    root, _ = write_tfds(tmp_path / "d", {"train": [20], "validation": [7], "test": [5]})
    source = data.inspect_input((str(root),), "--eval-files", (28, 28, 1), None,
                                class_names=NAMES)
    assert source.size == 7 and "'validation' split" in source.description
    with pytest.raises(TrainerError, match=r"has no test split \(it has train\); --test-files "
                                           "reads it, or give that split's shards as files"):
        data.inspect_input((str(write_tfds(tmp_path / "e", {"train": [4]})[0]),),
                           "--test-files", (28, 28, 1), None, class_names=NAMES)


def test_training_on_the_folder_and_predicting_its_test_split(tmp_path, capsys):
    root, truth = write_tfds(tmp_path / "digits" / "1.0.0", {"train": [300, 300], "test": [100]})
    result = task.run(config_from_flags(
        ["--train-files", str(root), "--eval-files", str(root), "--job-dir", str(tmp_path / "job"),
         "--model", "dnn", "--batch-size", "50", "--seed", "3", "--max-steps", "60",
         "--eval-every-steps", "60", *FP32], {}))
    assert result.metrics["accuracy"] > 0.5, result.metrics  # chance: 0.1
    code = predict.main(["--model-dir", result.export_path, str(root), "--split", "test",
                         "--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()[:100]
    shard = root / "digits-test.tfrecord-00000-of-00001"
    assert [line.split("  ")[0] for line in lines] == [f"{shard}#{i}" for i in range(100)]
    assert [line.split("  ")[2] for line in lines] == [f"true {NAMES[label]}"
                                                       for label in truth["test"]]
    accuracy = float(out.splitlines()[100].rsplit(" ", 1)[1])
    assert accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-6)
