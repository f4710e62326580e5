"""What a run leaves for a person to read: per-class results, confusion matrices, curves.

The chief writes them to the results directory (`<job-dir>/results/`; on Vertex beside the
checkpoints, in the job's output directory) and to TensorBoard:

    history.csv                        loss and accuracy per logged step (train) and evaluation
    curves.png                         those as curves                   (TensorBoard: train, image)
    eval_classes.csv, test_classes.csv precision, recall and count per class of the final
                                       evaluation and of --test-files    (TensorBoard: text)
    eval_confusion_matrix.csv/.png     the counts per true and predicted class (TensorBoard: image)

The per-class table is also logged. The PNGs need matplotlib (`plots.available()`); without it
the CSVs are still written and one log line says so.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from trainer import class_metrics, plots, storage
from trainer.loop import Evaluation, TrainInterval

log = logging.getLogger(__name__)

HISTORY = "history.csv"
CURVES = "curves.png"
_HISTORY_COLUMNS = ("step", "split", "loss", "accuracy")


class History:
    """A train and eval action: (step, loss, accuracy) per split, kept in history.csv.

    The file is rewritten at every evaluation and read back by a resumed run, which replaces
    the rows from its restored step on (they were logged by a run that did not save them)."""

    def __init__(self, results_dir: str):
        self._path = storage.join(results_dir, HISTORY)
        self.rows: list[tuple[int, str, float, float]] = []
        if storage.exists(self._path):
            with tf.io.gfile.GFile(self._path) as f:
                self.rows = [(int(r["step"]), r["split"], float(r["loss"]), float(r["accuracy"]))
                             for r in csv.DictReader(f)]

    def _add(self, step: int, split: str, metrics: dict) -> None:
        self.rows = [r for r in self.rows if r[1] != split or r[0] < step]
        self.rows.append((step, split, metrics["loss"], metrics["accuracy"]))

    def on_train(self, interval: TrainInterval) -> None:
        self._add(interval.step, "train", interval.metrics)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        self._add(evaluation.step, "eval", evaluation.metrics)
        self.write()

    def write(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_HISTORY_COLUMNS)
        writer.writerows(self.rows)
        write_whole(self._path, buffer.getvalue())

    def series(self) -> dict[str, list[tuple[int, float, float]]]:
        return {split: [(step, loss, accuracy) for step, s, loss, accuracy in self.rows
                        if s == split] for split in ("train", "eval")}


class OneClassGuard:
    """A train and eval action: one warning when an evaluation predicts one class for (nearly)
    every example while the last logged training interval was far more accurate.

    Seen with a from-scratch mobilenet_v3_small whose BatchNorm moving statistics lagged the
    weights: 99% in training, every eval image one class. Warned once per run: later
    evaluations of the same run would only repeat it."""

    def __init__(self, class_names: Sequence[str]):
        self._names = list(class_names)
        self._train_accuracy: float | None = None
        self.warned = False

    def on_train(self, interval: TrainInterval) -> None:
        self._train_accuracy = interval.metrics["accuracy"]

    def on_evaluation(self, evaluation: Evaluation) -> None:
        if self.warned or evaluation.confusion is None or self._train_accuracy is None:
            return
        found = class_metrics.one_class(evaluation.confusion, self._train_accuracy)
        if found is None:
            return
        self.warned = True
        log.warning(
            "eval at step %d predicted class %r for %s of %s examples (accuracy %.2f%%) while "
            "training accuracy was %.2f%%: the model computes differently in inference mode "
            "than in training, most likely BatchNorm moving statistics that do not match the "
            "training batches yet (or eval images prepared unlike the training ones); later "
            "evaluations and the export use inference mode", evaluation.step,
            self._names[found.index], f"{found.predicted:,}", f"{found.examples:,}",
            100 * evaluation.metrics["accuracy"], 100 * self._train_accuracy)


class Results:
    """The chief's results of one run: `History` during it, `final` for the last evaluation
    and the --test-files one, `curves` at the end."""

    def __init__(self, results_dir: str, tensorboard_dir: str,
                 class_names: Sequence[str] | None, num_classes: int):
        self._dir = results_dir
        self._tensorboard_dir = tensorboard_dir.rstrip("/")
        self._names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self._plots = plots.available()
        self.history = History(results_dir)
        self.one_class = OneClassGuard(self._names)
        if not self._plots:
            log.info("matplotlib is not installed: results as CSV only (pip install matplotlib "
                     "adds the confusion matrix and training curves as PNG and in TensorBoard)")

    def final(self, evaluation: Evaluation, split: str) -> None:
        """The per-class table (log, CSV, TensorBoard text) and the confusion matrix (CSV, PNG,
        TensorBoard image) of an evaluation; `split` is `eval` or `test`."""
        matrix = evaluation.confusion
        if matrix is None:
            return
        rows = class_metrics.rows_of(matrix, self._names)
        self._write(f"{split}_classes.csv", class_metrics.csv_text(rows))
        self._write(f"{split}_confusion_matrix.csv", _matrix_csv(matrix, self._names))
        png = None
        if self._plots:
            png = plots.confusion_matrix(matrix, self._names, f"{split}, step {evaluation.step}: ")
            self._write(f"{split}_confusion_matrix.png", png)
        log.info("%s per class at step %d (%s_classes.csv, %s_confusion_matrix.%s in %s):",
                 split, evaluation.step, split, split, "csv/.png" if png else "csv", self._dir)
        for line in class_metrics.table_lines(rows):
            log.info("  %s", line)
        with self._summaries(split, evaluation.step):
            tf.summary.text("per_class", class_metrics.markdown(rows))
            if png is not None:
                tf.summary.image("confusion_matrix", _image(png))

    def curves(self, step: int) -> None:
        """history.csv, and the curves as curves.png and in TensorBoard (train run)."""
        self.history.write()
        if not self._plots:
            return
        png = plots.curves(self.history.series())
        path = self._write(CURVES, png)
        with self._summaries("train", step):
            tf.summary.image("curves", _image(png))
        log.info("training curves: %s", path)

    def _write(self, name: str, content: str | bytes) -> str:
        path = storage.join(self._dir, name)
        write_whole(path, content)
        return path

    @contextlib.contextmanager
    def _summaries(self, run: str, step: int):
        """A TensorBoard writer of `run` for one block: closed (and so flushed) at its end."""
        writer = tf.summary.create_file_writer(f"{self._tensorboard_dir}/{run}")
        try:
            with writer.as_default(step=step):
                yield
        finally:
            writer.close()


def write_whole(path: str, content: str | bytes) -> None:
    """Written beside `path`, then moved onto it: a run killed while writing leaves the old file
    (which a resumed run reads back), never half of a new one."""
    staging = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(staging, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    tf.io.gfile.rename(staging, path, overwrite=True)


def _image(png: bytes):
    return tf.io.decode_png(png, channels=4)[tf.newaxis]


def _matrix_csv(matrix: np.ndarray, names: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, matrix):
        writer.writerow([name, *(int(v) for v in row)])
    return buffer.getvalue()
