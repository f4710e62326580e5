"""--init-checkpoint: start a model from another run's checkpoint, where variables match.

A variable matches when the other checkpoint holds one at the same place in the model's object
graph (e.g. `model/_operations/3/_kernel`) with the same shape and dtype: typically every layer
but a head with another class count.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from trainer.checkpoints import newest
from trainer.errors import TrainerError, short_reason

log = logging.getLogger(__name__)


def _checkpoint_keys(model, graph) -> dict:
    """id(variable) -> its key in the checkpoint, walking the model and the checkpoint's object
    graph (`model` under the root) side by side."""
    root_children = {c.local_name: c.node_id for c in graph.nodes[0].children}
    if "model" not in root_children:
        return {}
    found, stack, seen = {}, [(model, root_children["model"])], set()
    while stack:
        obj, node_id = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        node = graph.nodes[node_id]
        if isinstance(obj, (keras.Variable, tf.Variable)):
            keys = [a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE"]
            if keys:
                found[id(obj)] = keys[0]
            continue
        children = {c.local_name: c.node_id for c in node.children}
        for name, child in tf.train.TrackableView(obj).children(obj).items():
            if name in children:
                stack.append((child, children[name]))
    return found


def _tensor(reader, key: str, prefix: str):
    """A tensor of the checkpoint; a one-line error naming its data files if it does not read
    back (a truncated .data file raised IndexError)."""
    try:
        return reader.get_tensor(key)
    except (tf.errors.OpError, IndexError, ValueError) as err:
        shards = ", ".join(sorted(tf.io.gfile.glob(f"{prefix}.data-*"))) or f"{prefix}.data-*"
        raise TrainerError(f"--init-checkpoint: {prefix} is corrupt or truncated: {key} does not "
                           f"read back from {shards} ({short_reason(err)})") from None


def warm_start(model, path: str) -> list[str]:
    """Assigns the matching variables of the checkpoint at `path` (a prefix or a directory of
    checkpoints) to `model`; returns the names of those loaded."""
    flag = "--init-checkpoint"
    prefix = newest(path) if tf.io.gfile.isdir(path) else path
    if prefix is None or not tf.io.gfile.exists(prefix + ".index"):
        raise TrainerError(f"{flag}: no checkpoint at {path}; expected a checkpoint prefix "
                           "(.../ckpt-N) or a directory holding checkpoints")
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(_tensor(reader, "_CHECKPOINTABLE_OBJECT_GRAPH", prefix))
    except (tf.errors.OpError, ValueError) as err:
        raise TrainerError(f"{flag}: cannot read a checkpoint at {prefix} "
                           f"({short_reason(err)})") from None
    keys = _checkpoint_keys(model, graph)
    loaded, skipped = [], []
    for variable in model.weights:
        key = keys.get(id(variable))
        if (key is not None and shapes.get(key) == list(variable.shape)
                and dtypes.get(key) == tf.as_dtype(variable.dtype)):
            variable.assign(_tensor(reader, key, prefix))
            loaded.append(variable.path)
        else:
            skipped.append(variable.path)
    if not loaded:
        raise TrainerError(f"{flag}: no variable of {prefix} matches the model (name and "
                           "shape); was it written by trainer.task with the same --model?")
    log.info("warm start from %s: loaded %d variables: %s", prefix, len(loaded),
             ", ".join(loaded))
    if skipped:
        log.info("warm start: %d variables not in it (or of another shape) keep their "
                 "initial values: %s", len(skipped), ", ".join(skipped))
    return loaded
