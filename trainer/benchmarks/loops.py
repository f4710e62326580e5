"""The timed things several sections share: a benchmark's input source, a model built as the
trainer builds it, our training loop, and plain Keras `model.fit` of the same model and data.

Runs inside measurement processes only (it imports TensorFlow when used).
"""

from __future__ import annotations

import time

MNIST_SHAPE = (28, 28, 1)


def source(patterns: str, shape=MNIST_SHAPE):
    """The trainer's source for comma-separated TFRecord globs of `shape` images."""
    from trainer import data

    return data.inspect_input(tuple(patterns.split(",")), "--train-files", tuple(shape), 10)


def build(name: str, precision: str, shape=MNIST_SHAPE):
    """(model, optimizer) of `name` as trainer.task builds them."""
    import keras

    from trainer import models
    from trainer.precision import POLICIES

    spec = models.MODELS[name]
    # Mirrors trainer.task: the policy applies while the training model is built.
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        model = models.build_model(name, shape, 10, spec.dropout)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, models.build_optimizer(spec.optimizer, spec.learning_rate,
                                         weight_decay=spec.weight_decay)


class LoopVariant:
    """The trainer's own path: StepFunctions over make_dataset, `steps_per_call` steps a call;
    `run()` returns examples/s of one call."""

    def __init__(self, input_source, model_name: str, batch: int, precision: str,
                 steps_per_call: int, jit: bool = False):
        import tensorflow as tf

        from trainer import data, loop
        from trainer.loss_scale import DynamicLossScale

        model, optimizer = build(model_name, precision, input_source.image_shape)
        optimizer.build(model.trainable_variables)
        strategy = tf.distribute.get_strategy()
        self._steps = loop.StepFunctions(
            strategy, model, optimizer, batch, jit_compile=jit,
            loss_scale=DynamicLossScale() if precision == "fp16" else None)
        self._iterator = iter(strategy.distribute_datasets_from_function(
            lambda context=None: data.make_dataset(input_source, batch_size=batch,
                                                   training=True, shuffle_buffer=10_000, seed=1,
                                                   input_context=context)))
        self._num_steps = tf.constant(steps_per_call, tf.int64)
        self._examples = steps_per_call * batch

    def run(self) -> float:
        start = time.perf_counter()
        self._steps.train(self._iterator, self._num_steps).numpy()
        return self._examples / (time.perf_counter() - start)


class FitVariant:
    """The in-repo baseline: plain `model.fit` (Keras defaults) of the same model and data;
    `run()` returns examples/s of one epoch of `steps_per_call` steps."""

    def __init__(self, input_source, model_name: str, batch: int, steps_per_call: int):
        import keras

        from trainer import data

        model, optimizer = build(model_name, "none", input_source.image_shape)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self._model = model
        self._dataset = data.make_dataset(input_source, batch_size=batch, training=True,
                                          shuffle_buffer=10_000, seed=1)
        self._steps, self._batch = steps_per_call, batch
        self._seconds = 0.0
        outer = self

        class EpochClock(keras.callbacks.Callback):
            # Only the steps: fit's per-call set-up (iterator, callbacks) is left out, in the
            # baseline's favour.
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer._seconds = time.perf_counter() - self.start

        self._callbacks = [EpochClock()]

    def run(self) -> float:
        self._model.fit(self._dataset, steps_per_epoch=self._steps, epochs=1, verbose=0,
                        callbacks=self._callbacks)
        return self._steps * self._batch / self._seconds
