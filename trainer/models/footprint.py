"""What a model holds, in float32 values, worked out from its layers' shapes (no TF).

A model's footprint is its weights (Keras' `count_params`: trainable or not) and, per example,
the outputs of its layers that a training step keeps for the backward pass (dropout layers,
which only mask, left out). `trainer/memory.py` turns them into bytes before anything is built:
a dense layer after a flatten grows with the image, so `--image-height 20000` makes the `cnn`
1.6 trillion weights, which no machine could allocate. `Tally` walks the layers as their
builders stack them; tests/test_memory.py checks each footprint against the built model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Footprint:
    weights: int
    activations: int  # values per example, the input image not included


class Tally:
    """The running shape (height, width, channels) of a model's layers, its weights so far and
    the values each example's forward pass has kept; each method is one layer."""

    def __init__(self, input_shape: tuple[int, int, int]):
        self.height, self.width, self.channels = input_shape
        self.weights = 0
        self.activations = 0

    def keep(self, layers: int = 1) -> Tally:
        """`layers` more outputs of the current shape (an activation, a sum, a flatten)."""
        self.activations += layers * self.height * self.width * self.channels
        return self

    def conv(self, filters: int, kernel: int, *, bias: bool = True, strides: int = 1) -> Tally:
        """A square convolution with "same" padding."""
        self.weights += kernel * kernel * self.channels * filters + (filters if bias else 0)
        self.height, self.width = -(-self.height // strides), -(-self.width // strides)
        self.channels = filters
        return self.keep()

    def norm(self, per_channel: int) -> Tally:
        """BatchNormalization: `per_channel` weights (gamma, beta, moving mean and variance, as
        the layer has them)."""
        self.weights += per_channel * self.channels
        return self.keep()

    def pool(self) -> Tally:
        """2x2 max pooling with "same" padding."""
        self.height, self.width = -(-self.height // 2), -(-self.width // 2)
        return self.keep()

    def global_pool(self) -> Tally:
        self.height = self.width = 1
        return self.keep()

    def dense(self, units: int, *, bias: bool = True) -> Tally:
        """A dense layer over everything before it (flattened)."""
        inputs = self.height * self.width * self.channels
        self.weights += (inputs + bias) * units
        self.height, self.width, self.channels = 1, 1, units
        return self.keep()

    def footprint(self) -> Footprint:
        return Footprint(self.weights, self.activations)

