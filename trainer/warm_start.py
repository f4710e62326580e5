"""--init-checkpoint: start a model from another run's checkpoint, where variables match.

A variable matches when the other checkpoint holds one under the same object path (e.g.
`model/_operations/3/kernel`, the path tf.train.Checkpoint(model=...) writes) with the same
shape and dtype; typically every layer but a head with another class count.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from trainer.errors import TrainerError, short_reason

log = logging.getLogger(__name__)
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _variables_by_key(root, prefix: str) -> dict:
    found, stack, seen = {}, [(prefix, root)], set()
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (keras.Variable, tf.Variable)):
            found.setdefault(path + _SUFFIX, obj)
            continue
        for name, child in tf.train.TrackableView(obj).children(obj).items():
            stack.append((f"{path}/{name}", child))
    return found


def warm_start(model, path: str) -> list[str]:
    """Assigns the matching variables of the checkpoint at `path` (a prefix or a directory of
    checkpoints) to `model`; returns the names of those loaded."""
    flag = "--init-checkpoint"
    prefix = tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else path
    if prefix is None or not tf.io.gfile.exists(prefix + ".index"):
        raise TrainerError(f"{flag}: no checkpoint at {path}; expected a checkpoint prefix "
                           "(.../ckpt-N) or a directory holding checkpoints")
    try:
        reader = tf.train.load_checkpoint(prefix)
        available = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as err:
        raise TrainerError(f"{flag}: cannot read a checkpoint at {prefix} "
                           f"({short_reason(err)})") from None
    loaded, skipped = [], []
    for key, variable in sorted(_variables_by_key(model, "model").items()):
        if (available.get(key) == list(variable.shape)
                and dtypes.get(key) == tf.as_dtype(variable.dtype)):
            variable.assign(reader.get_tensor(key))
            loaded.append(getattr(variable, "path", variable.name))
        else:
            skipped.append(getattr(variable, "path", variable.name))
    if not loaded:
        raise TrainerError(f"{flag}: no variable of {prefix} matches the model (name and "
                           "shape); was it written by trainer.task with the same --model?")
    log.info("warm start from %s: loaded %d variables: %s", prefix, len(loaded),
             ", ".join(loaded))
    if skipped:
        log.info("warm start: %d variables not in it (or of another shape) keep their "
                 "initial values: %s", len(skipped), ", ".join(skipped))
    return loaded
