"""--ema-decay: evaluate and export the moving average of the weights, then train on.

The optimizer keeps the average (Keras `use_ema`); around an evaluation or export the model's
trainable variables hold the average and get their trained values back afterwards.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def averaged_weights(model, optimizer):
    variables = model.trainable_variables
    trained = [variable.numpy() for variable in variables]
    optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, trained):
            variable.assign(value)


class AveragedEvaluation:
    """An evaluation (callable with a `flag`) run on the averaged weights."""

    def __init__(self, evaluation, model, optimizer):
        self._evaluation = evaluation
        self._model = model
        self._optimizer = optimizer
        self.flag = evaluation.flag

    def __call__(self):
        with averaged_weights(self._model, self._optimizer):
            return self._evaluation()
