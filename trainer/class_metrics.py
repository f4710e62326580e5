"""Per-class results from a confusion matrix: precision, recall and count per class, as a CSV, a
text table for logs and a markdown table for TensorBoard (NumPy only, no TensorFlow).

Rows of the matrix are true classes, columns predicted ones. A class never predicted has no
precision, and one absent from the data no recall: both are left empty (CSV) or "-" (tables),
never a made-up 0.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CSV_COLUMNS = ("class_index", "class", "precision", "recall", "count", "predicted", "correct")
# A log of a thousand classes would bury the run's other lines: past this many, the log lists
# the classes of lowest recall and the CSV holds them all.
MAX_LOGGED = 30


@dataclass(frozen=True)
class ClassRow:
    index: int
    name: str
    count: int  # examples of this class (true label)
    predicted: int  # examples predicted as this class
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else math.nan

    @property
    def recall(self) -> float:
        return self.correct / self.count if self.count else math.nan


def rows_of(matrix: np.ndarray, names: Sequence[str]) -> list[ClassRow]:
    matrix = np.asarray(matrix)
    counts, predicted, correct = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    return [ClassRow(i, names[i], int(counts[i]), int(predicted[i]), int(correct[i]))
            for i in range(len(names))]


def _ratio(value: float, blank: str) -> str:
    return blank if math.isnan(value) else f"{value:.4f}"


def csv_text(rows: Sequence[ClassRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([row.index, row.name, _ratio(row.precision, ""), _ratio(row.recall, ""),
                         row.count, row.predicted, row.correct])
    return buffer.getvalue()


def table_lines(rows: Sequence[ClassRow], most: int = MAX_LOGGED) -> list[str]:
    """An aligned text table: every class, or past `most` those of lowest recall and a line
    saying how many more there are."""
    shown = list(rows)
    if len(shown) > most:
        shown = sorted(shown, key=lambda r: (-1 if math.isnan(r.recall) else r.recall,
                                             r.index))[:most]
    width = max([len("class")] + [len(r.name) for r in shown])
    lines = [f"{'class':<{width}}  precision  recall  count"]
    lines += [f"{r.name:<{width}}  {_ratio(r.precision, '-'):>9}  {_ratio(r.recall, '-'):>6}  "
              f"{r.count:>5,}" for r in shown]
    if len(rows) > most:
        lines.append(f"... and {len(rows) - most:,} more classes (these {most} have the lowest "
                     "recall)")
    return lines


def markdown(rows: Sequence[ClassRow]) -> str:
    """A markdown table, as TensorBoard's text dashboard renders it."""
    lines = ["| class | precision | recall | count |", "|---|---:|---:|---:|"]
    lines += [f"| {r.name.replace('|', '&#124;')} | {_ratio(r.precision, '-')} | "
              f"{_ratio(r.recall, '-')} | {r.count:,} |" for r in rows]
    return "\n".join(lines)


# An evaluation "predicts one class" when this share of its examples got the same prediction,
# and the training accuracy is "far above chance" when it is at least halfway from chance
# (1 / classes) to 100% and beats the evaluation's own accuracy by this much.
ONE_CLASS_SHARE = 0.95
ONE_CLASS_GAP = 0.25


@dataclass(frozen=True)
class OneClass:
    """The class an evaluation predicted for (nearly) every example."""

    index: int
    predicted: int  # examples predicted as this class
    examples: int


def one_class(matrix: np.ndarray, train_accuracy: float) -> OneClass | None:
    """The class predicted for at least ONE_CLASS_SHARE of the examples while `train_accuracy`
    is far above chance and above the evaluation's accuracy, else None."""
    matrix = np.asarray(matrix)
    classes, examples = len(matrix), int(matrix.sum())
    if classes < 2 or not examples:
        return None
    predicted = matrix.sum(axis=0)
    index = int(np.argmax(predicted))
    accuracy = np.trace(matrix) / examples
    far_above_chance = train_accuracy >= (1 + 1 / classes) / 2
    if (predicted[index] >= ONE_CLASS_SHARE * examples and far_above_chance
            and train_accuracy - accuracy >= ONE_CLASS_GAP):
        return OneClass(index, int(predicted[index]), examples)
    return None
