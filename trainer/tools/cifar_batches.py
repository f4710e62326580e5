"""The CIFAR-10/100 "python version" batches, read without running code from them (no TF).

The batches are pickles, and a plain `pickle.load` runs whatever a file asks for. They are read by
an unpickler that admits only what they hold: dicts, lists, numbers and text (pickle's own
opcodes), numpy arrays through the functions numpy pickles them with, and the `_codecs.encode`
call Python 3 writes for bytes at protocols 0-2. Any other global is refused by name. The fields
are then checked (`data` N rows of 3,072 bytes, one integer label per row within the names of
the meta file) so that a malformed batch is an error naming the file and the field, never a
traceback nor a silently wrong class.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np

from trainer.errors import TrainerError

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class Batch:
    path: str
    split: str  # "train" or "eval"
    pixels: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: list[int]  # indices into the meta file's names


class _Refused(Exception):
    pass


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    # How Python 3 pickles bytes at protocols 0-2; no other codec is ever needed.
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _admitted() -> dict[tuple[str, str], object]:
    """(module, name) -> object, for the globals numpy writes when it pickles an array or scalar,
    taken from numpy itself; both spellings of its core module (`numpy.core` in the files
    pickled by numpy 1, `numpy._core` by numpy 2)."""
    array = np.zeros(1, np.uint8)
    functions = {"multiarray": [array.__reduce__()[0], np.uint8(0).__reduce__()[0]],
                 "numeric": [array.__reduce_ex__(5)[0]]}
    admitted = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): _latin1}
    for module, found in functions.items():
        for function in found:
            for core in ("numpy.core", "numpy._core"):
                admitted[(f"{core}.{module}", function.__name__)] = function
    return admitted


class _Unpickler(pickle.Unpickler):
    admitted = _admitted()

    def find_class(self, module, name):
        found = self.admitted.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def load(path: str):
    """A pickle's value, refusing anything but CIFAR's types."""
    try:
        with open(path, "rb") as f:
            return _Unpickler(f, encoding="bytes").load()
    except _Refused as refused:
        raise TrainerError(f"--cifar: {path} refers to {refused}, which CIFAR batches never "
                           "hold; refused (only dicts, lists, numbers, text and numpy arrays "
                           "are read)") from None
    except OSError as err:
        raise TrainerError(f"--cifar: cannot read {path} ({err.strerror or err})") from None
    # A damaged pickle fails in many ways (UnpicklingError, EOFError, ValueError, TypeError,
    # KeyError, ...), all meaning the same to the user.
    except Exception as err:  # noqa: BLE001
        raise TrainerError(f"--cifar: {path} is not a readable pickle ({type(err).__name__}: "
                           f"{_clip(str(err))})") from None


def find(folder: str) -> tuple[list[tuple[str, str]], str, str, str]:
    """([(batch file, split)], label field, meta file, names field) of CIFAR-10 or CIFAR-100."""
    if os.path.exists(os.path.join(folder, "data_batch_1")):
        names = [f"data_batch_{i}" for i in range(1, 6)]
        batches = [(os.path.join(folder, n), "train") for n in names]
        return batches + [(os.path.join(folder, "test_batch"), "eval")], "labels", \
            os.path.join(folder, "batches.meta"), "label_names"
    if os.path.exists(os.path.join(folder, "train")):
        return [(os.path.join(folder, "train"), "train"), (os.path.join(folder, "test"), "eval")], \
            "fine_labels", os.path.join(folder, "meta"), "fine_label_names"
    if not os.path.exists(folder):
        raise TrainerError(f"--cifar: {folder} does not exist (expected the folder of the "
                           "CIFAR-10/100 python-version batches)")
    raise TrainerError(f"--cifar: {folder} holds neither CIFAR-10 (data_batch_1..5, test_batch) "
                       "nor CIFAR-100 (train, test) python batches")


def read(folder: str) -> tuple[list[str], list[Batch]]:
    """(class names, batches) of a CIFAR folder, every field checked."""
    batch_files, label_field, meta_path, names_field = find(folder)
    names = class_names(_fields(load(meta_path), meta_path, [names_field]), meta_path,
                        names_field)
    batches = []
    for path, split in batch_files:
        fields = _fields(load(path), path, ["data", label_field])
        pixels = _pixels(fields, path)
        labels = _labels(fields, path, label_field, len(pixels), names, meta_path)
        batches.append(Batch(path, split, pixels, labels))
    return names, batches


def _fields(value, path: str, wanted: list[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise TrainerError(f"--cifar: {path} holds a {type(value).__name__}; expected a dict "
                           f"with {' and '.join(repr(w) for w in wanted)}")
    return {_key(k): v for k, v in value.items()}


def _key(key) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def class_names(fields: dict, path: str, field: str) -> list[str]:
    if field not in fields:
        raise TrainerError(f"--cifar: {path} lacks '{field}'; expected the list of class names")
    value = fields[field]
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise TrainerError(f"--cifar: {path} field '{field}' is {_clip(repr(value))}; expected a "
                           "list of at least 2 class names")
    names = []
    for index, name in enumerate(value):
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else name
        except UnicodeDecodeError:
            text = None
        if not isinstance(text, str) or not text.strip():
            raise TrainerError(f"--cifar: {path} field '{field}' item {index} is "
                               f"{_clip(repr(name))}; expected a class name (UTF-8 text)")
        if text in names:
            raise TrainerError(f"--cifar: {path} field '{field}' names {text!r} twice; expected "
                               "distinct class names")
        names.append(text)
    return names


def _pixels(fields: dict, path: str) -> np.ndarray:
    """uint8 [N, 32, 32, 3] from `data`: N rows of the red, green and blue 32x32 planes."""
    if "data" not in fields:
        raise TrainerError(f"--cifar: {path} lacks 'data'; expected the images, one row of "
                           f"{_PIXELS} bytes each")
    data = fields["data"]
    if not isinstance(data, np.ndarray):
        raise TrainerError(f"--cifar: {path} field 'data' is a {type(data).__name__}; expected a "
                           f"numpy array of one row of {_PIXELS} bytes per image")
    if data.ndim != 2 or data.shape[1] != _PIXELS or not np.issubdtype(data.dtype, np.integer):
        raise TrainerError(f"--cifar: {path} field 'data' is a {data.dtype} array of shape "
                           f"{data.shape}; expected one row of {_PIXELS} bytes (3 planes of "
                           "32x32) per image")
    if data.dtype != np.uint8 and data.size and (data.min() < 0 or data.max() > 255):
        extreme = data.max() if data.max() > 255 else data.min()
        raise TrainerError(f"--cifar: {path} field 'data' holds values "
                           f"{'up' if extreme > 255 else 'down'} to {extreme}; expected bytes "
                           "0..255")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _labels(fields: dict, path: str, field: str, count: int, names: list[str],
            meta_path: str) -> list[int]:
    if field not in fields:
        raise TrainerError(f"--cifar: {path} lacks '{field}'; expected one class index per image")
    value = fields[field]
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else value
    if not isinstance(value, (list, tuple)):
        raise TrainerError(f"--cifar: {path} field '{field}' is {_clip(repr(value))}; expected "
                           "a list of class indices")
    if len(value) != count:
        raise TrainerError(f"--cifar: {path} field '{field}' holds {len(value)} labels for the "
                           f"{count} images of 'data'")
    labels = []
    for index, label in enumerate(value):
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise TrainerError(f"--cifar: {path} field '{field}' item {index} is "
                               f"{_clip(repr(label))}; expected a class index")
        if not 0 <= label < len(names):
            raise TrainerError(f"--cifar: {path} field '{field}' item {index} is {label}; "
                               f"expected 0..{len(names) - 1} (the {len(names)} classes named "
                               f"in {meta_path})")
        labels.append(int(label))
    return labels


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
