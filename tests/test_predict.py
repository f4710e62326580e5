"""`python -m trainer.predict` over TFRecords and image files: lines, grid and confusion matrix."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FP32, REPO, synthetic_images, write_records
from tests.exports import DIGITS, current_example, export_model, images, png
from trainer import data, predict, task
from trainer.config import config_from_flags
from trainer.data.source import Classes, Request


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A dnn trained to ~95% on the shared synthetic dataset: a few right, a few wrong."""
    train_files, eval_files = dataset
    job_dir = tmp_path_factory.mktemp("predict-job")
    result = task.run(config_from_flags(
        ["--train-files", train_files, "--eval-files", eval_files, "--job-dir", str(job_dir),
         "--model", "dnn", "--batch-size", "50", "--seed", "7", "--max-steps", "12",
         "--eval-every-steps", "12", *FP32], {}))
    return result.export_path, eval_files


def run_predict(capsys, *argv):
    code = predict.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def red_pixels(path) -> int:
    pixels = tf.io.decode_png(path.read_bytes(), channels=3).numpy().astype(int)
    return int(((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum())


def check_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, path


def test_records_print_predictions_and_write_both_pngs(trained, tmp_path, capsys):
    model_dir, eval_files = trained
    code, out, err = run_predict(capsys, "--model-dir", model_dir, eval_files, "--output-dir",
                                 str(tmp_path), "--limit", "120", "--batch-size", "50")
    assert code == 0, err
    lines = out.splitlines()
    printed = lines[:100]  # --show's default; every prediction is a row of predictions.csv
    assert lines[100] == "... 20 more in predictions.csv (--show N prints more)"
    with open(tmp_path / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["input"] for row in table] == [
        eval_files.replace("*", f"00000-of-00001.tfrecord#{i}") for i in range(120)]
    for line, row in zip(printed, table):
        assert line == (f"{row['input']}  {row['predicted']} ({float(row['confidence']):.3f})"
                        f"  true {row['true']}" + ("" if row["correct"] == "1" else "  WRONG"))
    wrong = sum(row["correct"] == "0" for row in table)
    accuracy = float(lines[101].rsplit(" ", 1)[1])
    assert lines[101].startswith("120 predictions, accuracy") and accuracy == 1 - wrong / 120
    assert lines[102].split() == ["class", "precision", "recall", "count"]
    assert lines[-4:] == [f"wrote {tmp_path / 'predictions.csv'}",
                          f"wrote {tmp_path / 'predictions.png'}",
                          f"wrote {tmp_path / 'confusion_matrix.png'}",
                          f"wrote {tmp_path / 'classes.csv'}"]
    for name in ("predictions.png", "confusion_matrix.png"):
        check_png(tmp_path / name)
    # The grid shows the misclassified first: red whenever any prediction is wrong.
    assert (red_pixels(tmp_path / "predictions.png") > 0) == (wrong > 0)
    # The per-class table and CSV match a count by hand of the predictions.
    counted = {str(c): {"count": 0, "predicted": 0, "correct": 0} for c in range(10)}
    for row in table:
        predicted, truth = row["predicted"], row["true"]
        counted[truth]["count"] += 1
        counted[predicted]["predicted"] += 1
        counted[truth]["correct"] += predicted == truth
    with open(tmp_path / "classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == [str(c) for c in range(10)]
    for row in rows:
        want = counted[row["class"]]
        assert {k: int(row[k]) for k in want} == want
        assert row["recall"] == (f"{want['correct'] / want['count']:.4f}" if want["count"]
                                 else "")
        assert row["precision"] == (f"{want['correct'] / want['predicted']:.4f}"
                                    if want["predicted"] else "")
    printed_table = {line.split()[0]: line.split()[1:] for line in lines[103:113]}
    assert {name: int(values[-1]) for name, values in printed_table.items()} == {
        name: want["count"] for name, want in counted.items()}


def test_the_grid_spans_the_classes_misclassified_first(trained, tmp_path):
    """Class folders list every image of class 0 first: the grid must still show the wrong
    predictions first, one class after the other, then right ones of every class."""
    model_dir, _ = trained
    pixels, labels = synthetic_images(150, seed=11)
    folders = labels.copy()
    folders[:3] = (labels[:3] + 5) % 10  # filed under a wrong class: certainly misclassified
    for index, (image, folder) in enumerate(zip(pixels, folders)):
        (tmp_path / str(folder)).mkdir(exist_ok=True)
        (tmp_path / str(folder) / f"{index:03d}.png").write_bytes(png(image))
    model = tf.saved_model.load(model_dir)
    source = data.inspect(Request((str(tmp_path),), "FILES", None, "", (28, 28, 1), 10, None,
                                  Classes(tuple(map(str, range(10))), 10, "the model")))
    result = predict.predict(model, source, batch_size=32, grid=25, limit=None)
    wrong = result.labels != result.classes
    assert 3 <= wrong.sum() < 25
    shown = [index for index, _ in result.grid]
    assert len(shown) == 25 and len(set(shown)) == 25
    assert [bool(wrong[i]) for i in shown] == [True] * wrong.sum() + [False] * (25 - wrong.sum())
    # Round robin over the classes: each class's first wrong one before any class's second.
    wrong_classes = [int(result.labels[i]) for i in shown[:wrong.sum()]]
    first_round = len(set(wrong_classes))
    assert len(set(wrong_classes[:first_round])) == first_round
    right_classes = [int(result.labels[i]) for i in shown[wrong.sum():]]
    assert set(right_classes[:10]) == set(range(10))
    for index, image in result.grid:  # each shown image is the one predicted at that index
        original = pixels[int(result.sources[index].rsplit("/", 1)[1][:3])]
        assert np.allclose(image, original / 255, atol=1e-6)


def test_the_grid_sample_keeps_the_smallest_keys_in_one_pass():
    sample = predict.GridSample(5)
    # (class, right) in arrival order; images are their indices
    stream = [(0, True), (0, True), (0, False), (1, True), (0, False), (2, False), (1, True),
              (2, True), (1, False)]
    for index, (klass, right) in enumerate(stream):
        sample.offer(index, klass, right, np.array([index]))
    # wrong: class 0 #2, class 2 #5, class 1 #8 (round 1), class 0 #4 (round 2); then right:
    # class 0 #0 (round 1, class 0 first)
    assert [index for index, _ in sample.chosen()] == [2, 8, 5, 4, 0]
    assert [int(image[0]) for _, image in sample.chosen()] == [2, 8, 5, 4, 0]


def test_images_in_class_folders_match_the_model_and_red_marks_the_wrong(trained, tmp_path,
                                                                         capsys):
    model_dir, _ = trained
    pixels, labels = synthetic_images(12, seed=9)
    folders = labels.copy()
    folders[0] = (labels[0] + 5) % 10  # one image filed under the wrong class
    for index, (image, folder) in enumerate(zip(pixels, folders)):
        (tmp_path / "images" / str(folder)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / str(folder) / f"{index:02d}.png").write_bytes(png(image))
    code, out, err = run_predict(capsys, "--model-dir", model_dir,
                                 str(tmp_path / "images" / "*" / "*.png"),
                                 "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    loaded = tf.saved_model.load(model_dir).signatures["serving_default"]
    want = loaded(image=tf.constant(pixels.astype(np.float32) / 255))["classes"].numpy()
    lines = {int(line.split("  ")[0].rsplit("/", 1)[1][:2]): line
             for line in out.splitlines()[:12]}
    assert sorted(lines) == list(range(12))
    for index, line in lines.items():
        assert line.split("  ")[1].startswith(f"{want[index]} (")
        assert f"true {folders[index]}" in line
        assert line.endswith("WRONG") == (want[index] != folders[index])
    assert lines[0].endswith("WRONG")
    assert red_pixels(tmp_path / "out" / "predictions.png") > 0
    check_png(tmp_path / "out" / "confusion_matrix.png")


def test_images_without_class_folders_get_a_grid_only_with_the_label_map(tmp_path, capsys):
    _, model_dir = export_model(tmp_path / "model", class_names=DIGITS)
    for index, image in enumerate(images(3)):
        (tmp_path / f"{index}.png").write_bytes(png(image))
    code, out, err = run_predict(capsys, "--model-dir", model_dir, str(tmp_path / "*.png"),
                                 "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert all(line.split("  ")[1].split(" ")[0] in DIGITS for line in out.splitlines()[:3])
    assert "3 predictions (no true labels: no confusion matrix)" in out
    check_png(tmp_path / "out" / "predictions.png")
    assert red_pixels(tmp_path / "out" / "predictions.png") == 0
    assert not (tmp_path / "out" / "confusion_matrix.png").exists()


@pytest.mark.parametrize("files, message", [
    (["{tmp}/none-*"], "FILES: no file matches '{tmp}/none-*'"),
    (["{tmp}/fake.png"], "FILES: {tmp}/fake.png: image {tmp}/fake.png is corrupt, truncated or "
                         "not a JPEG/PNG/GIF/BMP image (Unknown image file format."),
    (["{tmp}/fake.png", "{tmp}/data.tfrecord"], "FILES: give image files or data files "
                                                "(TFRecords, manifests), not both"),
    (["{tmp}/data.tfrecord"], "FILES: {tmp}/data.tfrecord: not a TFRecord file"),
])
def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys, files, message):
    (tmp_path / "fake.png").write_bytes(b"not a png")
    (tmp_path / "data.tfrecord").write_bytes(b"not a tfrecord file")
    code, _, err = run_predict(capsys, "--model-dir", trained[0], "--output-dir",
                               str(tmp_path / "out"), *[f.format(tmp=tmp_path) for f in files])
    assert code == 1
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1


def hostile_file(tmp_path, kind: str) -> str:
    """TFRecords whose first record is a good Example, and then something that is not."""
    good = [current_example(image, i % 10) for i, image in enumerate(images(100))]
    if kind in ("late bad record", "late bad record, GZIP"):
        not_utf8 = b"\xff\xfe\x80 not an Example \xc3\x28"
        compression = "GZIP" if "GZIP" in kind else ""
        return write_records(tmp_path / "late.tfrecord", good[:70] + [not_utf8] + good[70:],
                             compression)
    data = open(write_records(tmp_path / "whole.tfrecord", good, "GZIP"), "rb").read()
    path = tmp_path / "damaged.tfrecord"
    path.write_bytes(data[:len(data) // 2] if kind == "truncated GZIP" else
                     data[:20] + b"\xff" * 2000)  # undecodable deflate data
    return str(path)


@pytest.mark.parametrize("kind, message", [
    ("late bad record", "FILES: {path}: a record among #50-#99 is not a serialized "
                        "tf.train.Example"),
    ("late bad record, GZIP", "FILES: {path}: a record among #50-#99 is not a serialized "
                              "tf.train.Example"),
    ("truncated GZIP", "FILES: {path} is corrupt or truncated"),
    ("undecodable GZIP", "FILES: {path}: unreadable GZIP data"),
])
def test_hostile_records_are_one_line_errors_naming_the_file(trained, tmp_path, capsys, kind,
                                                             message):
    path = hostile_file(tmp_path, kind)
    code, _, err = run_predict(capsys, "--model-dir", trained[0], "--output-dir",
                               str(tmp_path / "out"), "--batch-size", "50", path)
    assert code == 1
    assert err.startswith("error: ") and message.format(path=path) in err, err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv, code, message", [
    (["x.png"], 2, "the following arguments are required: --model-dir"),
    (["--model-dir", "m", "x.png", "--limit", "0"], 2, "argument --limit: expected a positive "
                                                       "integer, got '0'"),
    (["--model-dir", "{tmp}", "x.png"], 1, "--model-dir: {tmp} holds no saved_model.pb"),
])
def test_the_command_fails_in_one_line(tmp_path, argv, code, message):
    done = subprocess.run([sys.executable, "-m", "trainer.predict",
                           *[arg.format(tmp=tmp_path) for arg in argv]], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message.format(tmp=tmp_path) in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def named_model(tmp_path_factory):
    """(an untrained cnn_small exported with the DIGITS label map, 12 images, their classes (the
    first ten one of each), what the model predicts for each)."""
    model, model_dir = export_model(tmp_path_factory.mktemp("named"), class_names=DIGITS)
    pixels, labels = synthetic_images(12, seed=4)[0], np.arange(12) % 10
    served = tf.saved_model.load(model_dir).signatures["serving_default"]
    want = served(image=tf.constant(pixels.astype(np.float32) / 255))["classes"].numpy()
    return model_dir, pixels, labels, want


def write_pngs(root, pixels, labels) -> list:
    paths = []
    for index, (image, label) in enumerate(zip(pixels, labels)):
        path = root / DIGITS[label] / f"{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(image))
        paths.append(path)
    return paths


def prediction_lines(out: str, count: int) -> dict:
    """{input name: (predicted, true)} of the first `count` lines."""
    rows = [line.split("  ") for line in out.splitlines()[:count]]
    return {row[0]: (row[1].split(" ")[0], row[2].removeprefix("true ")) for row in rows}


def test_a_class_folder_is_predicted_with_its_true_labels(named_model, tmp_path, capsys):
    model_dir, pixels, labels, want = named_model
    paths = write_pngs(tmp_path / "photos", pixels, labels)
    code, out, err = run_predict(capsys, "--model-dir", model_dir, str(tmp_path / "photos"),
                                 "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert prediction_lines(out, 12) == {str(path): (DIGITS[w], DIGITS[label]) for path, w, label
                                         in zip(paths, want, labels)}
    assert "12 predictions, accuracy" in out
    check_png(tmp_path / "out" / "confusion_matrix.png")


def test_a_combined_manifest_is_predicted_whole_or_by_split(named_model, tmp_path, capsys):
    model_dir, pixels, labels, want = named_model
    paths = write_pngs(tmp_path / "photos", pixels, labels)
    uses = ["training"] * 10 + ["validation", "test"]
    manifest = tmp_path / "all.jsonl"
    manifest.write_text("".join(json.dumps({
        "imageGcsUri": str(path), "classificationAnnotation": {"displayName": DIGITS[label]},
        "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": use}}) + "\n"
        for path, label, use in zip(paths, labels, uses)))
    expected = {f"{path} ({manifest} line {i + 1})": (DIGITS[w], DIGITS[label])
                for i, (path, w, label) in enumerate(zip(paths, want, labels))}
    code, out, err = run_predict(capsys, "--model-dir", model_dir, str(manifest),
                                 "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert prediction_lines(out, 12) == expected
    code, out, err = run_predict(capsys, "--model-dir", model_dir, str(manifest), "--split",
                                 "test", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert prediction_lines(out, 1) == dict(list(expected.items())[11:])
    assert "1 predictions, accuracy" in out


def test_manifest_errors_name_predicts_own_arguments(named_model, tmp_path, capsys):
    model_dir, pixels, labels, _ = named_model
    paths = write_pngs(tmp_path / "photos", pixels[:2], labels[:2])
    manifest = tmp_path / "train.csv"
    manifest.write_text(f"training,{paths[0]},{DIGITS[labels[0]]}\n"
                        f"validation,{paths[1]},{DIGITS[labels[1]]}\n")
    code, _, err = run_predict(capsys, "--model-dir", model_dir, str(manifest), "--split", "test",
                               "--output-dir", str(tmp_path / "out"))
    assert code == 1
    assert err == ("error: FILES: the manifest has no items with ml_use 'test' (it has "
                   "training, validation); --split test reads that split\n")
    manifest.write_text(f"{paths[0]},lion\n")
    code, _, err = run_predict(capsys, "--model-dir", model_dir, str(manifest),
                               "--output-dir", str(tmp_path / "out"))
    assert code == 1
    assert err.startswith(f"error: FILES: {manifest} line 1: label 'lion' is not one of the "
                          f"classes of the model ({model_dir}) (digit-0, ")
