"""`python -m trainer.predict` over TFRecords and image files: lines, grid and confusion matrix."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FP32, REPO, synthetic_images, write_records
from tests.exports import DIGITS, current_example, export_model, images, png
from trainer import predict, task
from trainer.config import config_from_flags


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
    predictions = lines[:120]
    assert predictions[0].startswith(eval_files.replace("*", "00000-of-00001.tfrecord#0  "))
    assert predictions[-1].split("  ")[0].endswith("#119")
    wrong = sum(line.endswith("WRONG") for line in predictions)
    accuracy = float(lines[120].rsplit(" ", 1)[1])
    assert lines[120].startswith("120 predictions, accuracy") and accuracy == 1 - wrong / 120
    assert lines[121:] == [f"wrote {tmp_path / 'predictions.png'}",
                           f"wrote {tmp_path / 'confusion_matrix.png'}"]
    for name in ("predictions.png", "confusion_matrix.png"):
        check_png(tmp_path / name)
    # The grid shows the first 25: red marks exactly the misclassified ones among them.
    assert (red_pixels(tmp_path / "predictions.png") > 0) == any(
        line.endswith("WRONG") for line in predictions[:25])


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
