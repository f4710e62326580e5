"""The run record: what a job dir's checkpoints were trained on, so no run resumes another's.

`run.json` beside the checkpoints holds the facts that give the weights their meaning: the
model, the input shape, the training data and the label map (class names in JSON, so any name
round-trips). A run that finds checkpoints stops with one line naming what differs, unless the
record agrees; checkpoints without a record (an older version's, or the record deleted) are
an error too, never a silent new label map. Everything else a rerun may change (--max-steps,
--epochs, evaluation, batch size, learning rate and schedule, augmentation, precision, ...).

Local runs without --job-dir get one directory per distinct run under ./trainer-output, named
by `run_name`: the model and a hash of the defining flags, so the same command resumes and
another model or data never meets these checkpoints. The helpers that name and compare are
pure Python; reading and writing go through tf.io.gfile (local, /gcs/, gs://).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from trainer.data.vertex_env import DataFiles
from trainer.errors import TrainerError, short_reason
from trainer.storage import is_url, join

log = logging.getLogger(__name__)

RECORD_NAME = "run.json"
_VERSION = 1
BUNDLED = "the bundled MNIST sample"
# The record's fields a resumed run must share, and what sets each of them.
DEFINING = {
    "model": "--model",
    "image_shape": "--image-height/--image-width/--image-channels",
    "train_data": "--train-files",
    "num_classes": "--num-classes",
    "class_names": "the label map",
}


def train_data(files: DataFiles) -> list[str]:
    """The training data as the record names it: its patterns made absolute (or the sample)."""
    if files.bundled:
        return [BUNDLED]
    return [_absolute(pattern) for pattern in files.train]


def _absolute(path: str) -> str:
    path = path.strip()
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def run_name(model: str, image_shape, files: DataFiles, num_classes: int | None,
             label_map: str | None) -> str:
    """`<model>-<hash>`: the default job dir of a run, from the flags that define it."""
    key = json.dumps({"model": model, "image_shape": list(image_shape),
                      "train_data": train_data(files), "num_classes": num_classes,
                      "label_map": _absolute(label_map) if label_map else None},
                     sort_keys=True)
    return f"{model}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:8]}"


def record_of(config, plan) -> dict:
    """The record of a run (a trainer.config.Config) on its data (a data.DataPlan)."""
    from trainer import data

    return {
        "version": _VERSION,
        "model": config.model.name,
        "image_shape": list(config.data.image_shape),
        "train_data": train_data(config.data.files),
        "num_classes": plan.num_classes,
        "class_names": list(plan.class_names) if plan.class_names else None,
        # For a reader: not compared.
        "training_on": data.describe(plan.train),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def differences(saved: dict, current: dict) -> list[str]:
    """What the saved record says otherwise than the current one, field by field."""
    found = []
    for field, origin in DEFINING.items():
        then, now = saved.get(field), current.get(field)
        if then == now:
            continue
        if field == "class_names" and then and now and len(then) == len(now):
            index = next(i for i, (a, b) in enumerate(zip(then, now)) if a != b)
            found.append(f"{origin}: class {index} was {then[index]!r}, now {now[index]!r}")
        elif field == "class_names":
            found.append(f"{origin}: {_names(then)} then, {_names(now)} now")
        else:
            found.append(f"{origin}: {_text(then)} then, {_text(now)} now")
    return found


def _text(value) -> str:
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def _names(names, limit: int = 6) -> str:
    if not names:
        return "integer labels (no class names)"
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"{len(names)} classes ({shown}{', ...' if len(names) > limit else ''})"


def claim(directory: str, record: dict, origin: str, *, restart_from_scratch: bool,
          write: bool) -> None:
    """Makes sure the checkpoints in `directory` (if any) were trained as `record` says; the
    chief (`write`) then records it. With --restart-from-scratch, checkpoints of another run
    are moved aside (never deleted) and this run starts from step 0."""
    from trainer import checkpoints

    saved = _load(directory)
    if not checkpoints.present(directory):
        if write and (saved is None or differences(saved, record)):
            _save(directory, record)
        return
    if saved is None:
        problem = (f"holds checkpoints but no run record ({RECORD_NAME}: the data, label map "
                   "and model they were trained on; an older version wrote none, or it was "
                   "deleted), so resuming could silently give the classes other meanings")
    else:
        found = differences(saved, record)
        if not found:
            return
        problem = f"holds checkpoints of another run ({'; '.join(found)})"
    if restart_from_scratch:
        if write:
            moved = checkpoints.set_aside(directory)
            _save(directory, record)
            log.warning("--restart-from-scratch: %s %s; its checkpoints are moved to %s and "
                        "this run starts from step 0", directory, problem, moved)
        return
    raise TrainerError(
        f"{origin}: {directory} {problem}; rerun with that run's flags to resume it, or pass "
        "--restart-from-scratch to start over there (the checkpoints are moved aside, not "
        f"deleted), or warm start from them with a new --job-dir and --init-checkpoint "
        f"{directory}")


def _path(directory: str) -> str:
    return join(directory, RECORD_NAME)


def _load(directory: str) -> dict | None:
    """The saved record; None when there is none or it is not one (treated alike: unknown).
    A storage failure is an error: a record that is there but unread must not count as none."""
    import tensorflow as tf

    path = _path(directory)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            content = json.loads(f.read().decode("utf-8"))
    except tf.errors.NotFoundError:
        return None
    except tf.errors.OpError as err:
        raise TrainerError(f"cannot read the run record {path} ({short_reason(err)})") from None
    except ValueError as err:
        log.warning("%s is not a run record (%s)", path, short_reason(err))
        return None
    return content if isinstance(content, dict) and content.get("version") == _VERSION \
        else None


def _save(directory: str, record: dict) -> None:
    """Written beside its place and renamed: a kill never leaves half a record."""
    import tensorflow as tf

    path = _path(directory)
    staging = f"{path}.tmp-{os.getpid()}"
    try:
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(staging, "w") as f:
            f.write(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        tf.io.gfile.rename(staging, path, overwrite=True)
    except tf.errors.OpError as err:
        raise TrainerError(f"cannot write the run record {path} ({short_reason(err)})") \
            from None
