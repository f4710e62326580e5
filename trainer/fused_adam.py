"""Adam with TensorFlow's fused update kernel.

Keras 3's Adam updates each variable with about ten element-wise ops, each a full pass over
the variable; for the tutorials' `cnn` (3.2M weights, 13 MB in its dense kernel) that was about
half of a training step on a 2-core CPU. `ResourceApplyAdam`, the kernel tf.estimator's
AdamOptimizer used, does the same update (same formula, same epsilon placement) in one pass.
Slots, checkpoints and the learning-rate schedule stay Keras's own.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        # Inside a strategy's update() the handles are those of this device's copies.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype), beta1=beta_1,
            beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))
        return None
