"""PNG figures a person reads: confusion matrices, training curves and sample grids.

Each function returns the PNG's bytes. They need matplotlib, which `pip install
"vertex-trainer[predict]"` (or `[all]`) brings and the training image leaves out: `available()`
says whether it is installed, and training then writes its results as CSV only.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Sequence

import numpy as np

_COLUMNS = 5


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def confusion_matrix(matrix: np.ndarray, names: Sequence[str], title: str = "") -> bytes:
    """Counts per true (rows) and predicted (columns) class, the run's accuracy in the title."""
    size = max(4.0, 0.6 * len(names) + 2)
    figure = _figure(size, size)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    if len(names) <= 40:  # beyond, the numbers would overlap: the colours tell
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                          color="white" if count > matrix.max() / 2 else "black")
    ticks = range(len(names))
    axes.set_xticks(ticks, names, rotation=90 if max(map(len, names)) > 2 else 0)
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    total = int(matrix.sum())
    accuracy = np.trace(matrix) / total if total else float("nan")
    axes.set_title(f"{title}{total:,} examples, accuracy {accuracy:.4f}")
    figure.tight_layout()
    return _png(figure)


def curves(series: dict[str, list[tuple[int, float, float]]]) -> bytes:
    """Loss and accuracy against the step, one line per split: {split: [(step, loss,
    accuracy)]}."""
    figure = _figure(10, 4)
    for column, (metric, scale) in enumerate((("loss", 1), ("accuracy", 100))):
        axes = figure.add_subplot(1, 2, column + 1)
        for split, points in series.items():
            if points:
                steps = [p[0] for p in points]
                values = [scale * p[1 + column] for p in points]
                axes.plot(steps, values, marker="o" if len(points) < 30 else None,
                          markersize=3, label=split)
        axes.set_xlabel("step")
        axes.set_ylabel("accuracy (%)" if column else "loss")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return _png(figure)


def grid(images: Sequence[np.ndarray], titles: Sequence[str], wrong: Sequence[bool],
         heading: str) -> bytes:
    """Images in rows of five, each titled; the `wrong` ones in red with a red frame."""
    rows = max(1, -(-len(images) // _COLUMNS))
    figure = _figure(2 * _COLUMNS, 2.2 * rows)
    for i, (image, title, bad) in enumerate(zip(images, titles, wrong)):
        axes = figure.add_subplot(rows, _COLUMNS, i + 1)
        pixels = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        axes.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                    cmap="gray", vmin=0, vmax=1)
        axes.set_title(title, color="red" if bad else "black", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_color("red" if bad else "black")
            spine.set_linewidth(3 if bad else 0.5)
    figure.suptitle(heading)
    figure.tight_layout()
    return _png(figure)
