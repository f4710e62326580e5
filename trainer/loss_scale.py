"""Dynamic loss scaling for float16 training (T4/V100-class GPUs).

float16 gradients of a small loss underflow to zero; multiplying the loss by a large scale
before the backward pass keeps them representable, and dividing the gradients by it afterwards
restores their value. When a scaled gradient overflows (inf/NaN) the step is skipped and the
scale halves; after GROWTH_STEPS good steps in a row it doubles.

Keras 3's own `LossScaleOptimizer` is not used: under MirroredStrategy it takes the finite
check of the first replica only (its comment assumes gradients already all-reduced, which they
are not at that point). Tried with 2 replicas, one overflowing: it applied the step, and every
replica's weights became NaN. Under strategies without merge_call each replica would decide
alone, which desynchronizes collectives.
`StepFunctions` all-reduces the overflow flag instead, so every replica skips the same steps.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.errors import TrainerError

_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA
# Keras' defaults (and the mixed-precision guide's): start at 2^15, double after 2,000 good
# steps in a row. A scale below FLOOR for PATIENCE_STEPS steps means training cannot recover.
INITIAL_SCALE = 2.0 ** 15
GROWTH_STEPS = 2000
FLOOR = 1.0
PATIENCE_STEPS = 200


class LossScaleCollapsed(TrainerError):
    """fp16 gradients kept overflowing however small the scale: training cannot go on."""


class DynamicLossScale:
    """The scale and its good-step counter, as variables for the checkpoint (create in scope)."""

    def __init__(self):
        self.scale = tf.Variable(INITIAL_SCALE, dtype=tf.float32, trainable=False,
                                 aggregation=_FIRST, name="loss_scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=_FIRST,
                                      name="loss_scale_good_steps")
        self.checkpointed = tf.train.Checkpoint(scale=self.scale, good_steps=self.good_steps)
        self._below_floor_since: int | None = None

    def value(self) -> float:
        return float(self.scale.numpy())

    def update(self, finite: tf.Tensor) -> None:
        """After a step (cross-replica context): grow after a good run, halve on overflow."""
        def good():
            grown = self.good_steps + 1 >= GROWTH_STEPS
            self.scale.assign(tf.where(grown, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(grown, tf.constant(0, tf.int64),
                                            self.good_steps + 1))

        def overflow():
            self.scale.assign(self.scale * 0.5)
            self.good_steps.assign(0)

        tf.cond(finite, good, overflow)

    def check(self, step: int) -> None:
        """At a boundary: a scale stuck below the floor for PATIENCE_STEPS steps is an error."""
        scale = self.value()
        if scale >= FLOOR:
            self._below_floor_since = None
            return
        if self._below_floor_since is None:
            self._below_floor_since = step
        if step - self._below_floor_since >= PATIENCE_STEPS:
            raise LossScaleCollapsed(
                f"fp16 loss scaling collapsed: the loss scale is {scale:g} (below "
                f"{FLOOR:g} since step {self._below_floor_since}) because the gradients "
                f"keep overflowing by step {step}; stopped without saving it; checkpoints from "
                "before it are kept (try --mixed-precision bf16 or none, or a lower "
                "--learning-rate)")
