"""Photo-like test data from real MNIST digits: image files of varying size and format.

Digits (from ../shared/data/mnist when it is beside the repo, else the synthetic squares) are
written as PNG and JPEG files of 20-60 px, every third one RGB with a colour tint, plus a GIF and
a BMP, into class folders named after the digits, with a `PATH,LABEL` CSV and a Vertex JSONL
manifest (ml_use set) listing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import REPO, synthetic_images
from trainer.tools.digit_photos import NAMES, encode, photo  # noqa: F401 (encode: for tests)

_MNIST_DIRS = [REPO.parent / "shared" / "data" / "mnist",
               REPO.parents[1] / "shared" / "data" / "mnist"]  # a worktree one level deeper


def digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 28, 28], labels [N]) drawn from MNIST's test set."""
    found = next((d for d in _MNIST_DIRS if (d / "t10k-images-idx3-ubyte.gz").exists()), None)
    if found is None:
        images, labels = synthetic_images(count, seed)
        return images[..., 0], labels
    from trainer.tools.prepare_mnist import read_idx

    images = read_idx(str(found / "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(str(found / "t10k-labels-idx1-ubyte.gz"))
    chosen = np.random.default_rng(seed).choice(len(images), count, replace=False)
    return images[chosen], labels[chosen]


@dataclass(frozen=True)
class ImageSet:
    root: Path
    train_dir: Path
    eval_dir: Path
    csv: Path  # training images, PATH,LABEL
    jsonl: Path  # every image, ml_use training / validation / test
    eval_files: list[tuple[Path, str]]  # (file, class name) of the validation images


def make_image_set(root: Path, train: int = 400, evaluation: int = 100, test: int = 60,
                   seed: int = 0) -> ImageSet:
    images, labels = digits(train + evaluation + test, seed)
    rng = np.random.default_rng(seed)
    splits = (["training"] * train + ["validation"] * evaluation + ["test"] * test)
    folders = {"training": root / "train", "validation": root / "eval", "test": root / "test"}
    rows, lines, eval_files = [], [], []
    for index, (digit, label, use) in enumerate(zip(images, labels, splits)):
        fmt = {0: "gif", 1: "bmp"}.get(index % 97, "png" if index % 2 else "jpg")
        name = NAMES[int(label)]
        path = folders[use] / name / f"{index:05d}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo(digit, rng, fmt, colour=index % 3 == 0))
        if use == "training":
            rows.append(f"{path},{name}")
        if use == "validation":
            eval_files.append((path, name))
        lines.append(json.dumps({
            "imageGcsUri": str(path),
            "classificationAnnotation": {"displayName": name, "annotationResourceLabels": {
                "aiplatform.googleapis.com/annotation_set_name": "123"}},
            "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": use}}))
    csv = root / "train.csv"
    csv.write_text("image,label\n" + "\n".join(rows) + "\n")
    jsonl = root / "all.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    return ImageSet(root, folders["training"], folders["validation"], csv, jsonl, eval_files)
