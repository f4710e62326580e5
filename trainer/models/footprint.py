"""What a model holds and computes for an input, worked out from its layers' shapes before
anything is built (no TF).

A model's footprint is its weights (Keras' `count_params`: trainable or not, BatchNorm
statistics included), per example the outputs of its layers that a training step keeps for the
backward pass (dropout layers, which only mask, left out), and the forward pass's multiply-adds
per example. `trainer/memory.py` turns weights and activations into bytes before anything is
built: a dense layer after a flatten grows with the image, so `--image-height 20000` makes the
`cnn` 1.6 trillion weights, which no machine could allocate. `Tally` walks the layers as their
builders stack them; tests/test_memory.py checks weights and activations against the built
models, tests/test_models.py weights and multiply-adds.

A choice absurd for the input is what the README's photo example once was: the tutorial `cnn`
on 224x224x3, whose dense layer over a 56x56x64 map holds 205,585,866 weights (7-28 s a step of
100 images on a 2-core CPU). `misfit` words the warning and names the models that fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Beyond either, a model is far from what the input needs: ResNet-50 has 23.6M parameters, and
# 10 GFLOPs a forward pass make about 3 TFLOPs per training step of 100 examples.
MAX_PARAMETERS = 25_000_000
MAX_FLOPS = 10e9


@dataclass(frozen=True)
class Footprint:
    weights: int
    activations: int  # values per example, the input image not included
    multiply_adds: int  # forward pass, one example

    @property
    def flops(self) -> int:
        return 2 * self.multiply_adds


class Tally:
    """The running shape (height, width, channels) of a model's layers, its weights so far, the
    values each example's forward pass has kept and its multiply-adds; each method is one
    layer."""

    def __init__(self, input_shape: tuple[int, int, int]):
        self.height, self.width, self.channels = input_shape
        self.weights = 0
        self.activations = 0
        self.multiply_adds = 0

    def keep(self, layers: int = 1) -> Tally:
        """`layers` more outputs of the current shape (an activation, a sum, a flatten)."""
        self.activations += layers * self.height * self.width * self.channels
        return self

    def conv(self, filters: int, kernel: int, *, bias: bool = True, strides: int = 1) -> Tally:
        """A square convolution with "same" padding."""
        per_position = kernel * kernel * self.channels * filters
        self.weights += per_position + (filters if bias else 0)
        self.height, self.width = -(-self.height // strides), -(-self.width // strides)
        self.multiply_adds += self.height * self.width * per_position
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
        self.multiply_adds += inputs * units
        self.height, self.width, self.channels = 1, 1, units
        return self.keep()

    def footprint(self) -> Footprint:
        return Footprint(self.weights, self.activations, self.multiply_adds)


def _fits(footprint: Footprint) -> bool:
    return footprint.weights <= MAX_PARAMETERS and footprint.flops <= MAX_FLOPS


def misfit(name: str, shape, num_classes: int, footprints: dict[str, Callable],
           pooled: Callable[[str], bool]) -> str | None:
    """The warning for a model far too large for the input, naming the numbers and up to three
    models that fit it (their weights do not grow with the image: `pooled`), cheapest first."""
    footprint = footprints[name](shape, num_classes)
    if _fits(footprint):
        return None
    others = [(footprints[other](shape, num_classes), other) for other in footprints
              if other != name and pooled(other)]
    others = sorted(((f, other) for f, other in others if _fits(f)),
                    key=lambda found: found[0].flops)[:3]
    shape_text = "x".join(str(d) for d in shape)
    suggestion = ("; models that fit it: " + ", ".join(
        f"{other} ({describe(f)})" for f, other in others) if others else "")
    return (f"--model {name} on {shape_text} images: {describe(footprint)} per example, "
            f"far beyond what the input needs (over {MAX_PARAMETERS:,} parameters or "
            f"{MAX_FLOPS / 1e9:g} GFLOPs): on a CPU that is seconds to minutes a step"
            f"{suggestion}")


def describe(footprint: Footprint) -> str:
    return f"{footprint.weights:,} parameters, {flops_text(footprint.flops)}"


def flops_text(flops: int) -> str:
    if flops >= 1e9:
        return f"{flops / 1e9:.2f} GFLOPs"
    return f"{flops / 1e6:.1f} MFLOPs"
