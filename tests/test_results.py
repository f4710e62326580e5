"""Results a person reads: per-class tables, confusion matrices and curves of a run (issue 23
item 5), counted in the evaluation step itself."""

import csv
import logging
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FP32, synthetic_images
from trainer import class_metrics, plots, task
from trainer.config import config_from_flags


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tags(event_dir) -> dict[str, list]:
    """{tag: [(step, plugin name)]} of every summary under a TensorBoard run directory."""
    found = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(
                    (event.step, value.metadata.plugin_data.plugin_name))
    return found


def run(dataset, job_dir, *flags):
    train_files, eval_files = dataset
    return task.run(config_from_flags(
        ["--train-files", train_files, "--eval-files", eval_files, "--test-files", eval_files,
         "--job-dir", str(job_dir), "--model", "dnn", "--batch-size", "50", "--seed", "7",
         "--max-steps", "20", "--eval-every-steps", "10", "--log-every-steps", "5",
         "--learning-rate", "0.002", *FP32,
         *flags], {}))


def test_the_final_evaluation_writes_per_class_results_that_match_a_hand_count(dataset,
                                                                              tmp_path):
    result = run(dataset, tmp_path)
    # The eval set is the shared fixture's: 500 synthetic images of seed 2, in file order.
    pixels, labels = synthetic_images(500, seed=2)
    served = tf.saved_model.load(result.export_path).signatures["serving_default"]
    predicted = served(image=tf.constant(pixels.astype(np.float32) / 255))["classes"].numpy()
    matrix = np.zeros((10, 10), int)
    for truth, guess in zip(labels, predicted):
        matrix[truth, guess] += 1
    assert 0 < np.trace(matrix) < 500  # some right, some wrong: the table has something to say
    results = tmp_path / "results"
    for split in ("eval", "test"):
        rows = read_csv(results / f"{split}_classes.csv")
        assert [r["class"] for r in rows] == [str(i) for i in range(10)]
        for i, row in enumerate(rows):
            count, guessed, right = matrix[i].sum(), matrix[:, i].sum(), matrix[i, i]
            assert (int(row["count"]), int(row["predicted"]), int(row["correct"])) == (
                count, guessed, right)
            assert row["recall"] == (f"{right / count:.4f}" if count else "")
            assert row["precision"] == (f"{right / guessed:.4f}" if guessed else "")
        with open(results / f"{split}_confusion_matrix.csv", newline="") as f:
            written = [[int(v) for v in line[1:]] for line in list(csv.reader(f))[1:]]
        assert np.array_equal(written, matrix)
        assert (results / f"{split}_confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert np.array_equal(result.evaluations[-1].confusion, matrix)
    history = read_csv(results / "history.csv")
    assert [(int(r["step"]), r["split"]) for r in history] == [
        (5, "train"), (10, "train"), (10, "eval"), (15, "train"), (20, "train"), (20, "eval")]
    assert float(history[-1]["accuracy"]) == pytest.approx(result.metrics["accuracy"])
    assert (results / "curves.png").read_bytes().startswith(b"\x89PNG")
    logs = tmp_path / "logs"
    assert tags(logs / "eval")["confusion_matrix"] == [(20, "images")]
    assert tags(logs / "eval")["per_class"] == [(20, "text")]
    assert tags(logs / "test")["confusion_matrix"] == [(20, "images")]
    assert tags(logs / "train")["curves"] == [(20, "images")]


def test_without_matplotlib_the_results_are_csv_and_a_resumed_run_continues_the_history(
        dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(plots, "available", lambda: False)
    caplog.set_level(logging.INFO)
    run(dataset, tmp_path)
    results = tmp_path / "results"
    assert sorted(p.name for p in results.iterdir()) == [
        "eval_classes.csv", "eval_confusion_matrix.csv", "history.csv", "test_classes.csv",
        "test_confusion_matrix.csv"]
    assert "matplotlib is not installed: results as CSV only" in caplog.text
    # A rerun to a larger --max-steps keeps the first run's history and adds its own.
    run(dataset, tmp_path, "--max-steps", "30")
    steps = [(int(r["step"]), r["split"]) for r in read_csv(results / "history.csv")]
    assert steps == [(5, "train"), (10, "train"), (10, "eval"), (15, "train"), (20, "train"),
                     (20, "eval"), (25, "train"), (30, "train"), (30, "eval")]


def test_class_rows_leave_undefined_ratios_empty_and_the_log_lists_the_worst_classes():
    matrix = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 4]])
    rows = class_metrics.rows_of(matrix, ["cat", "dog", "emu"])
    assert [(r.count, r.predicted, r.correct) for r in rows] == [(4, 5, 3), (0, 1, 0),
                                                                 (6, 4, 4)]
    assert math.isnan(rows[1].recall) and rows[1].precision == 0
    assert class_metrics.csv_text(rows).splitlines() == [
        "class_index,class,precision,recall,count,predicted,correct",
        "0,cat,0.6000,0.7500,4,5,3", "1,dog,0.0000,,0,1,0", "2,emu,1.0000,0.6667,6,4,4"]
    assert class_metrics.table_lines(rows) == [
        "class  precision  recall  count", "cat       0.6000  0.7500      4",
        "dog       0.0000       -      0", "emu       1.0000  0.6667      6"]
    worst = class_metrics.table_lines(rows, most=2)
    assert worst[1:] == ["dog       0.0000       -      0", "emu       1.0000  0.6667      6",
                         "... and 1 more classes (these 2 have the lowest recall)"]


def one_class_matrix(classes=10, per_class=20, predicted=0):
    matrix = np.zeros((classes, classes), dtype=np.int64)
    matrix[:, predicted] = per_class
    return matrix


def test_an_evaluation_of_one_class_after_accurate_training_logs_one_warning(caplog):
    from trainer.loop import Evaluation, TrainInterval
    from trainer.results import OneClassGuard

    names = [f"digit{i}" for i in range(10)]
    guard = OneClassGuard(names)

    def evaluate(step, matrix, train_accuracy):
        guard.on_train(TrainInterval(step, 10, 1.0, {"loss": 0.1, "accuracy": train_accuracy},
                                     320))
        correct = np.trace(matrix) / matrix.sum()
        guard.on_evaluation(Evaluation(step, {"loss": 2.3, "accuracy": correct},
                                       int(matrix.sum()), 0.5, 10.0, matrix))

    with caplog.at_level(logging.WARNING, logger="trainer.results"):
        evaluate(10, one_class_matrix(), 0.15)  # training near chance: nothing learned yet
        evaluate(20, np.diag([20] * 10), 0.99)  # a good evaluation
        assert not caplog.records
        evaluate(30, one_class_matrix(predicted=3), 0.99)
        evaluate(40, one_class_matrix(predicted=3), 0.99)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert caplog.records[0].levelname == "WARNING"
    assert "step 30 predicted class 'digit3' for 200 of 200 examples" in message
    assert "training accuracy was 99.00%" in message and "BatchNorm" in message


def test_one_class_means_nearly_every_prediction_and_training_far_above_chance():
    nearly = one_class_matrix(classes=4, per_class=24, predicted=1)
    nearly[0, :] = [1, 23, 0, 0]  # 95 of 96 predicted as class 1
    assert class_metrics.one_class(nearly, 0.9) == class_metrics.OneClass(1, 95, 96)
    spread = nearly.copy()
    spread[0, :] = [6, 18, 0, 0]  # 90 of 96
    assert class_metrics.one_class(spread, 0.9) is None
    # Binary training at 70% is not far above chance (halfway to 100% is 75%); a data set of
    # one class is predicted right by one class.
    assert class_metrics.one_class(one_class_matrix(classes=2), 0.7) is None
    assert class_metrics.one_class(one_class_matrix(classes=2), 0.8) == class_metrics.OneClass(
        0, 40, 40)
    assert class_metrics.one_class(np.array([[0, 0], [0, 50]]), 1.0) is None
