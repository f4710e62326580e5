"""What a run would hold in memory, worked out before anything is allocated, against what this
machine can give it (no TF).

A training step holds the model's weights with their gradients and optimizer slots, and for each
example of its batch the input image and the layer outputs kept for the backward pass
(trainer/models/footprint.py), while the input pipeline readies the next batch beside it. That
is a floor: TensorFlow's own buffers and libraries, decoding and the shuffle buffer come on top.
A run whose floor exceeds the memory this process can get (MemAvailable in /proc/meminfo, or the
room left under its cgroup's limit) could only grow until the kernel killed it without a word
(`--batch-size 100000000`) or fail in a ResourceExhaustedError traceback (`--image-height 20000
--image-width 20000`, where the `cnn`'s dense layer alone is 1.6 trillion weights); it is refused
up front, with the numbers. Device memory (GPUs, TPUs) is not seen here: where the model runs
on one, only the input pipeline's share of the host is checked.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from trainer.cli import UsageError
from trainer.models import MODELS

# Per weight, what the optimizer keeps beside it (Keras 3: Adam's two moments, momentum's
# velocity, RMSprop's mean square, Adagrad's accumulator).
OPTIMIZER_SLOTS = {"adam": 2, "sgd": 0, "momentum": 1, "rmsprop": 1, "adagrad": 1}
_FLOAT = 4
_HALF = 2


@dataclass(frozen=True)
class Room:
    """Bytes this process can still take, and where the number comes from (for messages)."""

    bytes: int
    source: str


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _stat(text: str | None, key: str) -> int:
    """The number after `key` in a file of `key value [unit]` lines (memory.stat, meminfo)."""
    for line in (text or "").splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) >= 2 and fields[0] == key and fields[1].isdigit():
            return int(fields[1])
    return 0


def _cgroup_rooms(root: str):
    """(room, cgroup dir) under each memory limit of this process's cgroup and its parents, for
    cgroup v2 and v1: the limit less what is in use, page cache that can be dropped excepted."""
    for line in (_read(os.path.join(root, "proc/self/cgroup")) or "").splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            base, files = "sys/fs/cgroup", ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, files = "sys/fs/cgroup/memory", ("memory.limit_in_bytes",
                                                   "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        # Inside a container the path is the host's; the mount shows this cgroup as its root.
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            directory = os.path.join(root, base, *parts[:depth])
            limit = (_read(os.path.join(directory, files[0])) or "").strip()
            if not limit.isdigit():  # absent, or v2's "max"
                continue
            used = int((_read(os.path.join(directory, files[1])) or "0").strip() or 0)
            cache = _stat(_read(os.path.join(directory, "memory.stat")), files[2])
            yield int(limit) - max(used - cache, 0), "/" + os.path.join(base, *parts[:depth])


def room(root: str = "/") -> Room | None:
    """What this process can still take (None where the system does not say: no /proc)."""
    found = []
    available = _stat(_read(os.path.join(root, "proc/meminfo")), "MemAvailable")
    if available:
        found.append(Room(available * 1024, "MemAvailable in /proc/meminfo"))
    found += [Room(max(free, 0), f"the room under the memory limit of cgroup {directory}")
              for free, directory in _cgroup_rooms(root)]
    return min(found, key=lambda r: r.bytes) if found else None


def size(count: int) -> str:
    if count >= 1e11:
        return f"{count / 1e9:,.0f} GB"
    return f"{count / 1e9:,.1f} GB" if count >= 1e8 else f"{count / 1e6:,.1f} MB"


@dataclass(frozen=True)
class Need:
    """Bytes a training step holds: `state` once, `per_example` for each example of its batch
    (its image, the layer outputs it keeps, and its successor's image in the pipeline)."""

    weights: int
    state: int
    per_example: int
    image: int  # one input image


def training_need(model: str, image_shape: tuple[int, int, int], num_classes: int,
                  optimizer: str, averaged: bool, half_precision: bool,
                  on_accelerator: bool = False) -> Need:
    """What one example and the model's state hold in this machine's memory during a training
    step, at the least. `half_precision`: the activations are 16-bit. `on_accelerator`: the
    weights, their state and the activations live in GPU or TPU memory, which is not seen
    here; the host holds the input pipeline's images."""
    footprint = MODELS[model].footprint(image_shape, num_classes)
    image = _FLOAT * math.prod(image_shape)
    if on_accelerator:
        return Need(footprint.weights, 0, 2 * image, image)
    copies = 2 + OPTIMIZER_SLOTS[optimizer] + averaged  # weights, gradients, slots, average
    activations = (_HALF if half_precision else _FLOAT) * footprint.activations
    return Need(footprint.weights, _FLOAT * copies * footprint.weights,
                2 * image + activations, image)


def problem(need: Need, available: Room, *, model: str, image_shape: tuple[int, int, int],
            num_classes: int, batch: int, eval_batch: int) -> str | None:
    """Why the run cannot fit in `available`, naming the flags to change; None if it may."""
    where = f"the {size(available.bytes)} this process can get ({available.source})"
    shape = f"{image_shape[0]:,} x {image_shape[1]:,} x {image_shape[2]}"
    state = (f"its {need.weights:,} weights with their gradients and optimizer state take "
             f"{size(need.state)} and " if need.state else "")
    if need.state + need.per_example > available.bytes:
        return (f"--model {model} on {shape} images (--image-height/--image-width) with "
                f"{num_classes:,} classes cannot fit in this machine's memory: {state}one "
                f"training example takes {size(need.per_example)}, more than {where}; use "
                "smaller images, fewer classes or another --model")
    fit = (available.bytes - need.state) // need.per_example
    total = need.state + batch * need.per_example
    if total > available.bytes:
        held = (f"{size(need.per_example)} per example and {size(need.state)} of weights and "
                "optimizer state" if need.state else
                f"{size(need.per_example)} per example in the input pipeline")
        return (f"--batch-size {batch:,} cannot fit in this machine's memory: a training step "
                f"of --model {model} on {shape} images holds at least {size(total)} ({held}), "
                f"more than {where}; at most {fit:,} examples fit")
    # Evaluation keeps no activations for a backward pass: its batch of images and the next.
    evaluating = need.state + 2 * eval_batch * need.image
    if evaluating > available.bytes:
        return (f"--eval-batch-size {eval_batch:,} cannot fit in this machine's memory: its "
                f"images alone take {size(2 * eval_batch * need.image)} (this batch and the "
                f"next), more than {where}; at most "
                f"{(available.bytes - need.state) // (2 * need.image):,} fit")
    return None


def check(config, plan, *, half_precision: bool, on_accelerator: bool,
          available: Room | None = None) -> None:
    """Raises UsageError when this training task's share of the run (a trainer.config.Config,
    over a trainer.data.DataPlan, in the precision chosen for its devices) cannot fit in this
    machine's memory."""
    available = available or room()
    if available is None:
        return
    model, data, cluster = config.model, config.data, config.cluster
    # multi_worker_mirrored splits the global batch over the chief and the workers.
    role = cluster.role
    machines = len(role.spec.get("chief", ())) + role.num_workers if cluster.strategy.votes \
        else 1
    # Evaluation reads its data once: a batch larger than the data holds only the data.
    eval_batch = min(model.eval_batch_size, plan.eval.size or model.eval_batch_size)
    need = training_need(model.name, data.image_shape, plan.num_classes, model.optimizer,
                         config.recipe.ema_decay is not None, half_precision, on_accelerator)
    found = problem(need, available, model=model.name, image_shape=data.image_shape,
                    num_classes=plan.num_classes, batch=-(-model.batch_size // machines),
                    eval_batch=eval_batch)
    if found:
        raise UsageError(found)
