"""The learning rate over the run: warm-up, then constant, cosine, step or linear decay.

A run with a frozen backbone has two phases (head only, then the whole net at the fine-tune
learning rate); the schedule, warm-up included, runs within each phase.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from trainer.config import RecipeConfig

_STEP_DROPS = (0.5, 0.75)  # fractions of a phase after which the step schedule divides by 10


class PhasedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`phases`: (first step, end step, peak learning rate), in order and contiguous."""

    def __init__(self, kind: str, warmup_steps: int, phases: list[tuple[int, int, float]]):
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.phases = phases

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(0.0)
        for start, end, peak in reversed(self.phases):
            rate = tf.where(step < end, self._phase(step - start, end - start, peak), rate)
        # The last phase goes on past its end (a resumed run given a larger --max-steps).
        return tf.where(step >= self.phases[-1][1], self._phase(
            step - self.phases[-1][0], self.phases[-1][1] - self.phases[-1][0],
            self.phases[-1][2]), rate)

    def _phase(self, t, length, peak):
        warmup = min(self.warmup_steps, length - 1)
        progress = tf.clip_by_value((t - warmup) / max(length - warmup, 1), 0.0, 1.0)
        if self.kind == "cosine":
            decayed = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "linear":
            decayed = peak * (1.0 - progress)
        elif self.kind == "step":
            drops = tf.add_n([tf.cast(progress >= f, tf.float32) for f in _STEP_DROPS])
            decayed = peak * tf.pow(0.1, drops)
        else:
            decayed = tf.constant(peak, tf.float32)
        if not warmup:
            return decayed
        return tf.where(t < warmup, peak * (t + 1.0) / warmup, decayed)

    def get_config(self):
        return {"kind": self.kind, "warmup_steps": self.warmup_steps, "phases": self.phases}


def learning_rate(recipe: RecipeConfig, peak: float, max_steps: int):
    """The optimizer's learning rate (`peak`: --learning-rate): a plain number when it never
    changes, as before."""
    if (recipe.lr_schedule == "constant" and not recipe.warmup_steps
            and not recipe.freeze_backbone_steps):
        return peak
    freeze = recipe.freeze_backbone_steps
    phases = ([(0, freeze, peak), (freeze, max_steps, recipe.fine_tune_learning_rate)] if freeze
              else [(0, max_steps, peak)])
    return PhasedSchedule(recipe.lr_schedule, recipe.warmup_steps, phases)
