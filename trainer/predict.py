"""Run an exported model over anything the trainer reads: `python -m trainer.predict`.

    python -m trainer.predict --model-dir trainer-output/export/1700000000 \
        'data/mnist/eval-*' --output-dir predictions

FILES are read as --train-files/--eval-files are, through the same data code (trainer.data:
the same detection, up-front checks, pipeline and one-line errors): TFRecords (raw pixels or
encoded images), a class folder (ROOT/CLASS/img), JSONL/CSV manifests (every item, or one ml_use
split with --split), a TFDS dataset folder, or image files and globs of them. Images are decoded
and resized as evaluation does them, then go through the model's `serving_default` signature.
Each prediction is a row of `predictions.csv` naming its input (FILE#N for a record), and the
first --show of them print as lines too. True labels come with the data (records, class folders,
manifests), or for image files from their folder's name when every folder names one of the
model's classes.

Written to --output-dir: `predictions.csv` (input, predicted class, confidence, true class and
whether it is right, where known), `predictions.png`, a grid of --grid images drawn across the classes,
misclassified ones first (in red), titled with the true and predicted label; with true labels
also `confusion_matrix.png` and `classes.csv` (precision, recall and count per class, also
printed).
"""

from __future__ import annotations

import argparse
import heapq
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trainer import class_metrics, plots
from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError, short_reason

GRID_FILE = "predictions.png"
ROWS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion_matrix.png"
CLASSES_FILE = "classes.csv"
SPLITS = ("training", "validation", "test")


@dataclass
class Predictions:
    sources: list[str]
    classes: np.ndarray  # int [N]
    confidence: np.ndarray  # float [N]: the predicted class's probability
    labels: np.ndarray | None  # int [N], when known
    grid: list[tuple[int, np.ndarray]]  # (example index, H x W x C image) to display, in order


class GridSample:
    """The examples a grid shows, chosen in one pass over any number of them, keeping `size`.

    Drawn across classes, misclassified first: every misclassified class's first wrong
    example, then every such class's second, ..., then the same for the right ones. Each example
    gets the key (right?, its rank among its class's wrong or right ones, class) when it
    arrives, and keys never change, so the `size` smallest keys seen so far are the grid's.
    The class is the true one, or the predicted one where there are no true labels.
    """

    def __init__(self, size: int):
        self._size = size
        self._heap: list = []  # (negated key, index, image): the largest key on top
        self._seen: dict[tuple[bool, int], int] = {}

    def offer(self, index: int, klass: int, right: bool, image) -> None:
        rank = self._seen.get((right, klass), 0)
        self._seen[(right, klass)] = rank + 1
        key = (-int(right), -rank, -klass)
        if len(self._heap) < self._size:
            heapq.heappush(self._heap, (key, index, np.array(image)))
        elif key > self._heap[0][0]:
            heapq.heapreplace(self._heap, (key, index, np.array(image)))

    def chosen(self) -> list[tuple[int, np.ndarray]]:
        return [(index, image) for _, index, image in sorted(self._heap, reverse=True)]


def predict(model, source, batch_size: int, grid: int, limit: int | None) -> Predictions:
    """The model's predictions for every example of `source` (the first `limit`), in
    evaluation order, and the `grid` examples to show."""
    import tensorflow as tf

    from trainer import data

    signature = model.signatures["serving_default"]
    batches = iter(data.make_dataset(source, batch_size=batch_size, training=False,
                                     num_batches=None if limit is None else -(-limit //
                                                                             batch_size)))
    sources, classes, confidence, labels = [], [], [], []
    sample = GridSample(grid)
    for names in source.example_names().batch(batch_size):
        names = [name.decode("utf-8", "replace") for name in names.numpy()]
        try:
            batch_images, batch_labels = next(batches)
        except StopIteration:
            break
        except UnicodeDecodeError:
            # TensorFlow's error quotes the record and cannot say which of the batch it was.
            raise TrainerError(f"{source.flag}: {_among(names)} is not a serialized "
                               "tf.train.Example") from None
        except tf.errors.OpError as err:
            raise data.explain_pipeline_error(err, source) or TrainerError(
                f"{source.flag}: cannot read {_among(names)} ({short_reason(err)})") from None
        count = len(names) if limit is None else min(len(names), limit - len(sources))
        outputs = signature(image=batch_images[:count])
        predicted = outputs["classes"].numpy()
        truth = batch_labels.numpy()[:count]
        pixels = batch_images.numpy()
        for i in range(count):
            known = source.labelled
            sample.offer(len(sources) + i, int(truth[i] if known else predicted[i]),
                         not known or truth[i] == predicted[i], pixels[i])
        sources += names[:count]
        classes.append(predicted)
        confidence.append(outputs["probabilities"].numpy().max(axis=1))
        labels.append(truth)
        if limit is not None and len(sources) >= limit:
            break
    return Predictions(sources, np.concatenate(classes), np.concatenate(confidence),
                       np.concatenate(labels) if source.labelled else None, sample.chosen())


def _among(names: list[str]) -> str:
    """The examples of a batch, in words: "FILE: a record among #A-#B" within one file."""
    files = {name.rsplit("#", 1)[0] for name in names}
    if len(files) == 1 and all("#" in name for name in names):
        return (f"{files.pop()}: a record among #{names[0].rsplit('#', 1)[1]}-"
                f"#{names[-1].rsplit('#', 1)[1]}")
    return f"a record among {names[0]} ... {names[-1]}"


def grid_png(predictions: Predictions, names: list[str]) -> bytes:
    """The grid's images titled `true / predicted`; misclassified ones in red."""
    titles, wrong = [], []
    for index, _ in predictions.grid:
        predicted = names[predictions.classes[index]]
        if predictions.labels is None:
            titles.append(predicted)
            wrong.append(False)
        else:
            titles.append(f"{names[predictions.labels[index]]} / {predicted}")
            wrong.append(predictions.labels[index] != predictions.classes[index])
    return plots.grid([image for _, image in predictions.grid], titles, wrong,
                      "true / predicted" if predictions.labels is not None else "predicted")


def confusion_matrix(labels: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, classes), 1)
    return matrix


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of lines (0 or more), got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="vertex-trainer predict", allow_abbrev=False,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", metavar="FILES",
                   help="what --train-files takes: TFRecords, a class folder, JSONL/CSV "
                        "manifests, a TFDS folder, or images (paths or globs)")
    p.add_argument("--model-dir", required=True, help="a SavedModel exported by trainer.task")
    p.add_argument("--output-dir", default="predictions", help="where the PNGs go")
    p.add_argument("--split", choices=SPLITS,
                   help="the ml_use split of a manifest (or TFDS split) to predict; default: all")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--grid", type=_positive, default=25,
                   help="images in predictions.png: across the classes, misclassified first")
    p.add_argument("--limit", type=_positive, help="predict the first N inputs only")
    p.add_argument("--show", type=_non_negative, default=100,
                   help="print the first N predictions as lines (all are in predictions.csv)")
    return p


def run(args: argparse.Namespace) -> list[str]:
    """Predicts, prints one line per input, writes the PNGs; returns their paths."""
    from trainer import data, export, storage
    from trainer.data.source import Classes, Request, Terms

    model = export.load(args.model_dir, "--model-dir")
    if "serving_default" not in model.signatures:
        raise TrainerError(f"--model-dir: {args.model_dir} lacks the signature "
                           "'serving_default'; export it with trainer.task")
    serving = model.signatures["serving_default"]
    image_shape = tuple(serving.structured_input_signature[1]["image"].shape[1:])
    num_classes = serving.structured_outputs["probabilities"].shape[-1]
    names = export.class_names_of(args.model_dir) or [str(i) for i in range(num_classes)]
    model_terms = Terms(image_shape="the model's input, --model-dir",
                        num_classes="the model's classes, --model-dir", skip_hint=None)
    source = data.inspect(Request(
        tuple(args.files), "FILES", args.split, f"--split {args.split}", image_shape,
        num_classes, None, Classes(tuple(names), num_classes, f"the model ({args.model_dir})"),
        model_terms, labels_required=False))
    storage.ensure_writable_dir(args.output_dir, "--output-dir")
    predictions = predict(model, source, args.batch_size, args.grid, args.limit)

    for i, name in enumerate(predictions.sources[:args.show]):
        line = f"{name}  {names[predictions.classes[i]]} ({predictions.confidence[i]:.3f})"
        if predictions.labels is not None:
            truth = names[predictions.labels[i]]
            line += f"  true {truth}" + ("" if predictions.labels[i] == predictions.classes[i]
                                         else "  WRONG")
        print(line)
    if len(predictions.sources) > args.show:
        print(f"... {len(predictions.sources) - args.show:,} more in {ROWS_FILE} (--show N "
              "prints more)")
    written = [_write(args.output_dir, ROWS_FILE, rows_csv(predictions, names)),
               _write(args.output_dir, GRID_FILE, grid_png(predictions, names))]
    if predictions.labels is not None:
        matrix = confusion_matrix(predictions.labels, predictions.classes, num_classes)
        print(f"{len(predictions.sources)} predictions, accuracy "
              f"{np.trace(matrix) / matrix.sum():.4f}")
        rows = class_metrics.rows_of(matrix, names)
        print("\n".join(class_metrics.table_lines(rows)))
        written += [_write(args.output_dir, CONFUSION_FILE, plots.confusion_matrix(matrix, names)),
                    _write(args.output_dir, CLASSES_FILE, class_metrics.csv_text(rows))]
    else:
        print(f"{len(predictions.sources)} predictions (no true labels: no confusion matrix)")
    for path in written:
        print(f"wrote {path}")
    return written


def rows_csv(predictions: Predictions, names: Sequence[str]) -> str:
    """predictions.csv: a row per prediction, in input order."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    known = predictions.labels is not None
    writer.writerow(["input", "predicted", "confidence"] + (["true", "correct"] if known else []))
    for i, name in enumerate(predictions.sources):
        row = [name, names[predictions.classes[i]], f"{predictions.confidence[i]:.6f}"]
        if known:
            row += [names[predictions.labels[i]],
                    int(predictions.labels[i] == predictions.classes[i])]
        writer.writerow(row)
    return text.getvalue()


def _write(directory: str, name: str, content: str | bytes) -> str:
    from trainer.results import write_whole
    from trainer.storage import join

    path = join(directory, name)
    write_whole(path, content)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)
        run(args)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
