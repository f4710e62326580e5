"""Run an exported model over images or TFRecords: `python -m trainer.predict`.

    python -m trainer.predict --model-dir trainer-output/export/1700000000 \
        'data/mnist/eval-*' --output-dir predictions

FILES are paths or globs (local, /gcs/ or gs://): PNG/JPEG files (by their .png/.jpg/.jpeg
suffix) go through the model's `encoded_image` signature, as a client's upload would; anything
else is read as TFRecords of the trainer's schema through the training input pipeline (so the
same checks and messages apply) and the `serving_default` signature. Each prediction prints as
one line. True labels come from the records' `label`, or for images from their folder's name
when every folder names a class (`digits/3/a.png`, or `digits/cat/a.png` with a label map).

Written to --output-dir: `predictions.png`, a grid of the first --grid images titled with the
true and predicted label (misclassified ones in red), and with true labels
`confusion_matrix.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import posixpath
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError, short_reason

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRID_FILE = "predictions.png"
CONFUSION_FILE = "confusion_matrix.png"
_COLUMNS = 5


@dataclass
class Predictions:
    sources: list[str]
    classes: np.ndarray  # int [N]
    confidence: np.ndarray  # float [N]: the predicted class's probability
    labels: np.ndarray | None  # int [N], when known
    images: list[np.ndarray]  # the first --grid inputs, H x W x C, for display


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _folder_labels(paths: list[str], names: list[str]) -> np.ndarray | None:
    folders = [posixpath.basename(posixpath.dirname(path.replace(os.sep, "/"))) for path in paths]
    if not all(folder in names for folder in folders):
        return None
    return np.array([names.index(folder) for folder in folders])


def predict_images(model, paths: list[str], names: list[str], batch_size: int,
                   grid: int, channels: int) -> Predictions:
    import tensorflow as tf

    signature = model.signatures["encoded_image"]
    classes, confidence, images = [], [], []
    for batch in _batches(paths, batch_size):
        encoded = []
        for path in batch:
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    encoded.append(f.read())
            except tf.errors.OpError as err:
                raise TrainerError(f"FILES: cannot read {path} ({short_reason(err)})") from None
        try:
            outputs = signature(image_bytes=tf.constant(encoded))
        except tf.errors.InvalidArgumentError:
            for path, data in zip(batch, encoded):  # find the file at fault
                try:
                    signature(image_bytes=tf.constant([data]))
                except tf.errors.InvalidArgumentError as err:
                    raise TrainerError(f"FILES: {path} is not a PNG or JPEG image "
                                       f"({short_reason(err)})") from None
            raise
        classes.append(outputs["classes"].numpy())
        confidence.append(outputs["probabilities"].numpy().max(axis=1))
        for data in encoded[:max(0, grid - len(images))]:
            images.append(tf.io.decode_image(data, channels=channels,
                                             expand_animations=False).numpy())
    return Predictions(list(paths), np.concatenate(classes), np.concatenate(confidence),
                       _folder_labels(paths, names), images)


def predict_records(model, files: list[str], image_shape, num_classes: int, batch_size: int,
                    grid: int, limit: int | None) -> Predictions:
    import tensorflow as tf

    from trainer import data

    source = data.inspect_input(tuple(files), "FILES", image_shape, num_classes)
    signature = model.signatures["serving_default"]
    sources, classes, confidence, labels, images = [], [], [], [], []
    # One pipeline per file keeps records in file order, so each result names its record.
    for path, compression in zip(source.files, source.compressions):
        single = dataclasses.replace(source, files=(path,), compressions=(compression,))
        index = 0
        try:
            for batch_images, batch_labels in data.make_dataset(single, batch_size=batch_size,
                                                                training=False):
                if limit is not None:
                    batch_images = batch_images[:limit - len(sources)]
                    batch_labels = batch_labels[:limit - len(sources)]
                outputs = signature(image=batch_images)
                count = len(batch_labels)
                sources += [f"{path}#{index + i}" for i in range(count)]
                index += count
                classes.append(outputs["classes"].numpy())
                confidence.append(outputs["probabilities"].numpy().max(axis=1))
                labels.append(batch_labels.numpy())
                images += list(batch_images.numpy()[:max(0, grid - len(images))])
                if limit is not None and len(sources) >= limit:
                    break
        except (tf.errors.OpError, UnicodeDecodeError) as err:
            raise _record_error(err, single, index, batch_size) from None
        if limit is not None and len(sources) >= limit:
            break
    return Predictions(sources, np.concatenate(classes), np.concatenate(confidence),
                       np.concatenate(labels), images)


def _record_error(err: Exception, source, first: int, batch_size: int) -> TrainerError:
    """One line naming the file (`source` holds one) for an error met reading its records
    from record number `first` on."""
    from trainer import data

    path = source.files[0]
    if isinstance(err, UnicodeDecodeError):
        # A batch is parsed at once, and TensorFlow's error cannot say which record failed.
        return TrainerError(f"FILES: {path}: a record among #{first}-#{first + batch_size - 1} "
                            "is not a serialized tf.train.Example")
    return data.explain_pipeline_error(err, source) or TrainerError(
        f"FILES: {path}: cannot read its records ({short_reason(err)})")


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
                   help="PNG/JPEG files or TFRecords (paths or globs), not both")
    p.add_argument("--model-dir", required=True, help="a SavedModel exported by trainer.task")
    p.add_argument("--output-dir", default="predictions", help="where the PNGs go")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--grid", type=_positive, default=25, help="images in predictions.png")
    p.add_argument("--limit", type=_positive, help="predict the first N inputs only")
    return p


def run(args: argparse.Namespace) -> list[str]:
    """Predicts, prints one line per input, writes the PNGs; returns their paths."""
    from trainer import export, storage
    from trainer.storage import join

    model = export.load(args.model_dir, "--model-dir")
    missing = sorted({"serving_default", "encoded_image"} - set(model.signatures))
    if missing:
        raise TrainerError(f"--model-dir: {args.model_dir} lacks the signature(s) {missing}; "
                           "export it with trainer.task")
    serving = model.signatures["serving_default"]
    image_shape = tuple(serving.structured_input_signature[1]["image"].shape[1:])
    num_classes = serving.structured_outputs["probabilities"].shape[-1]
    names = export.class_names_of(args.model_dir) or [str(i) for i in range(num_classes)]
    files = storage.expand_patterns(tuple(args.files), "FILES")
    is_image = [path.lower().endswith(IMAGE_SUFFIXES) for path in files]
    if any(is_image) and not all(is_image):
        raise TrainerError("FILES: give PNG/JPEG images or TFRecord files, not both")
    storage.ensure_writable_dir(args.output_dir, "--output-dir")
    if all(is_image):
        predictions = predict_images(model, files[:args.limit], names, args.batch_size,
                                     args.grid, image_shape[-1])
    else:
        predictions = predict_records(model, files, image_shape, num_classes, args.batch_size,
                                      args.grid, args.limit)

    for i, source in enumerate(predictions.sources):
        line = f"{source}  {names[predictions.classes[i]]} ({predictions.confidence[i]:.3f})"
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
