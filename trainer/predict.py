"""Run an exported model over anything the trainer reads: `python -m trainer.predict`.

    python -m trainer.predict --model-dir trainer-output/export/1700000000 \
        'data/mnist/eval-*' --output-dir predictions

FILES are read as --train-files/--eval-files are, through the same data code (trainer.data:
the same detection, up-front checks, pipeline and one-line errors): TFRecords (raw pixels or
encoded images), a class folder (ROOT/CLASS/img), JSONL/CSV manifests (every item, or one ml_use
split with --split), a TFDS dataset folder, or image files and globs of them. Images are decoded
and resized as evaluation does them, then go through the model's `serving_default` signature.
Each prediction prints as one line naming its input (FILE#N for a record). True labels come with
the data (records, class folders, manifests), or for image files from their folder's name when
every folder names one of the model's classes.

Written to --output-dir: `predictions.png`, a grid of the first --grid images titled with the
true and predicted label (misclassified ones in red), and with true labels
`confusion_matrix.png`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError, short_reason

GRID_FILE = "predictions.png"
CONFUSION_FILE = "confusion_matrix.png"
SPLITS = ("training", "validation", "test")
_COLUMNS = 5


@dataclass
class Predictions:
    sources: list[str]
    classes: np.ndarray  # int [N]
    confidence: np.ndarray  # float [N]: the predicted class's probability
    labels: np.ndarray | None  # int [N], when known
    images: list[np.ndarray]  # the first --grid inputs, H x W x C, for display


def predict(model, source, batch_size: int, grid: int, limit: int | None) -> Predictions:
    """The model's predictions for every example of `source` (the first `limit`), in
    evaluation order."""
    import tensorflow as tf

    from trainer import data

    signature = model.signatures["serving_default"]
    batches = iter(data.make_dataset(source, batch_size=batch_size, training=False,
                                     num_batches=None if limit is None else -(-limit //
                                                                             batch_size)))
    sources, classes, confidence, labels, images = [], [], [], [], []
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
        sources += names[:count]
        classes.append(outputs["classes"].numpy())
        confidence.append(outputs["probabilities"].numpy().max(axis=1))
        labels.append(batch_labels.numpy()[:count])
        images += list(batch_images.numpy()[:max(0, min(count, grid - len(images)))])
        if limit is not None and len(sources) >= limit:
            break
    return Predictions(sources, np.concatenate(classes), np.concatenate(confidence),
                       np.concatenate(labels) if source.labelled else None, images)


def _among(names: list[str]) -> str:
    """The examples of a batch, in words: "FILE: a record among #A-#B" within one file."""
    files = {name.rsplit("#", 1)[0] for name in names}
    if len(files) == 1 and all("#" in name for name in names):
        return (f"{files.pop()}: a record among #{names[0].rsplit('#', 1)[1]}-"
                f"#{names[-1].rsplit('#', 1)[1]}")
    return f"a record among {names[0]} ... {names[-1]}"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> None:
    import tensorflow as tf

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def plot_grid(predictions: Predictions, names: list[str], path: str) -> None:
    """The images titled `true / predicted`; misclassified ones in red, with a red frame."""
    count = len(predictions.images)
    rows = -(-count // _COLUMNS)
    figure = _figure(2 * _COLUMNS, 2.2 * rows)
    for i, image in enumerate(predictions.images):
        axes = figure.add_subplot(rows, _COLUMNS, i + 1)
        pixels = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        axes.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                    cmap="gray", vmin=0, vmax=1)
        predicted = names[predictions.classes[i]]
        wrong = predictions.labels is not None and predictions.labels[i] != predictions.classes[i]
        title = (f"{names[predictions.labels[i]]} / {predicted}" if predictions.labels is not None
                 else predicted)
        axes.set_title(title, color="red" if wrong else "black", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_color("red" if wrong else "black")
            spine.set_linewidth(3 if wrong else 0.5)
    figure.suptitle("true / predicted" if predictions.labels is not None else "predicted")
    figure.tight_layout()
    _save(figure, path)


def confusion_matrix(labels: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, classes), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, names: list[str], path: str) -> None:
    size = max(4.0, 0.6 * len(names) + 2)
    figure = _figure(size, size)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > matrix.max() / 2 else "black")
    ticks = range(len(names))
    axes.set_xticks(ticks, names, rotation=90 if max(map(len, names)) > 2 else 0)
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = np.trace(matrix) / matrix.sum()
    axes.set_title(f"{matrix.sum()} examples, accuracy {accuracy:.4f}")
    figure.tight_layout()
    _save(figure, path)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
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
    p.add_argument("--grid", type=_positive, default=25, help="images in predictions.png")
    p.add_argument("--limit", type=_positive, help="predict the first N inputs only")
    return p


def run(args: argparse.Namespace) -> list[str]:
    """Predicts, prints one line per input, writes the PNGs; returns their paths."""
    from trainer import data, export, storage
    from trainer.data.source import Classes, Request, Terms
    from trainer.storage import join

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

    for i, name in enumerate(predictions.sources):
        line = f"{name}  {names[predictions.classes[i]]} ({predictions.confidence[i]:.3f})"
        if predictions.labels is not None:
            truth = names[predictions.labels[i]]
            line += f"  true {truth}" + ("" if predictions.labels[i] == predictions.classes[i]
                                         else "  WRONG")
        print(line)
    written = [join(args.output_dir, GRID_FILE)]
    plot_grid(predictions, names, written[0])
    if predictions.labels is not None:
        matrix = confusion_matrix(predictions.labels, predictions.classes, num_classes)
        print(f"{len(predictions.sources)} predictions, accuracy "
              f"{np.trace(matrix) / matrix.sum():.4f}")
        written.append(join(args.output_dir, CONFUSION_FILE))
        plot_confusion(matrix, names, written[1])
    else:
        print(f"{len(predictions.sources)} predictions (no true labels: no confusion matrix)")
    for path in written:
        print(f"wrote {path}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        run(args)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
