"""What a model costs for an input, by arithmetic, before anything is built (pure Python).

Parameters (everything `count_params` counts, BatchNorm statistics included) and the forward
pass's multiply-adds per example, layer by layer for the tutorials' models and the CIFAR
ResNets. The keras.applications backbones are fully convolutional: their weights do not depend
on the input, and their multiply-adds are `per_pixel` x H x W + `fixed`, both measured from the
built Keras models at 224x224 and 96x96 (exact at sizes that are multiples of 32; elsewhere the
strides' rounding makes small images cost up to ~40% more, e.g. 33x45). `tests/test_models.py` checks every model against its built form.

A choice absurd for the input is what the README's photo example once was: the tutorial `cnn`
on 224x224x3, whose dense layer over a 56x56x64 map holds 205,585,866 parameters (7-28 s a
step of 100 images on a 2-core CPU). `misfit` words the warning and names the models that fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

# Beyond either, a model is far from what the input needs: ResNet-50 has 23.6M parameters, and
# 10 GFLOPs a forward pass make about 3 TFLOPs per training step of 100 examples.
MAX_PARAMETERS = 25_000_000
MAX_FLOPS = 10e9


@dataclass(frozen=True)
class Cost:
    parameters: int
    multiply_adds: int  # forward pass, one example

    @property
    def flops(self) -> int:
        return 2 * self.multiply_adds


Estimate = Callable[[tuple[int, int, int], int], Cost]


def _half(size: int) -> int:
    return math.ceil(size / 2)  # 2x2 pooling or stride 2 with "same" padding


def _dense(inputs: int, units: int, bias: bool = True) -> Cost:
    return Cost(inputs * units + (units if bias else 0), inputs * units)


def _conv(height: int, width: int, kernel: int, channels: int, filters: int,
          bias: bool = True) -> Cost:
    """A 'same' convolution whose output is height x width."""
    weights = kernel * kernel * channels * filters
    return Cost(weights + (filters if bias else 0), height * width * weights)


def _sum(costs) -> Cost:
    costs = list(costs)
    return Cost(sum(c.parameters for c in costs), sum(c.multiply_adds for c in costs))


def dnn(shape, num_classes: int) -> Cost:
    sizes = (math.prod(shape), 512, 256, 128, num_classes)
    return _sum(_dense(a, b) for a, b in zip(sizes, sizes[1:]))


def conv_pool_dense(filters: tuple[int, int], dense_units: int) -> Estimate:
    def estimate(shape, num_classes: int) -> Cost:
        height, width, channels = shape
        parts = []
        for count in filters:
            parts.append(_conv(height, width, 5, channels, count))
            height, width, channels = _half(height), _half(width), count
        parts += [_dense(height * width * channels, dense_units),
                  _dense(dense_units, num_classes)]
        return _sum(parts)

    return estimate


def cnn_bn(shape, num_classes: int) -> Cost:
    height, width, channels = shape
    parts = []
    for filters, pool in ((32, False), (32, True), (64, False), (64, True), (128, True)):
        # No bias; BatchNorm without scale: beta, moving mean and variance.
        parts += [_conv(height, width, 3, channels, filters, bias=False), Cost(3 * filters, 0)]
        channels = filters
        if pool:
            height, width = _half(height), _half(width)
    parts += [_dense(height * width * channels, 200, bias=False), Cost(3 * 200, 0),
              _dense(200, num_classes)]
    return _sum(parts)


def resnet(blocks_per_stage: int) -> Estimate:
    def estimate(shape, num_classes: int) -> Cost:
        height, width, channels = shape

        def conv_bn(cin, filters):  # no bias; BatchNorm: gamma, beta, moving mean and variance
            return [_conv(height, width, 3, cin, filters, bias=False), Cost(4 * filters, 0)]

        parts = conv_bn(channels, 16)
        channels = 16
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                if stage and not block:
                    height, width = _half(height), _half(width)
                parts += conv_bn(channels, filters) + conv_bn(filters, filters)
                channels = filters
        return _sum(parts + [_dense(channels, num_classes)])

    return estimate


def backbone(parameters: int, features: int, per_pixel: float, fixed: int) -> Estimate:
    def estimate(shape, num_classes: int) -> Cost:
        height, width, _ = shape
        head = _dense(features, num_classes)
        return Cost(parameters + head.parameters,
                    round(per_pixel * height * width) + fixed + head.multiply_adds)

    return estimate


def misfit(name: str, shape, num_classes: int, estimates: dict[str, Estimate],
           fits: Callable[[str], bool]) -> str | None:
    """The warning for a model far too large for the input, naming the numbers and up to three
    models that fit it (their weights do not grow with the image: `fits`), cheapest first."""
    cost = estimates[name](shape, num_classes)
    if cost.parameters <= MAX_PARAMETERS and cost.flops <= MAX_FLOPS:
        return None
    others = [(estimates[other](shape, num_classes), other) for other in estimates
              if other != name and fits(other)]
    others = sorted(((c, other) for c, other in others if c.parameters <= MAX_PARAMETERS
                     and c.flops <= MAX_FLOPS), key=lambda found: found[0].flops)[:3]
    shape_text = "x".join(str(d) for d in shape)
    suggestion = ("; models that fit it: " + ", ".join(
        f"{other} ({describe(c)})" for c, other in others) if others else "")
    return (f"--model {name} on {shape_text} images: {describe(cost)} per example, "
            f"far beyond what the input needs (over {MAX_PARAMETERS:,} parameters or "
            f"{MAX_FLOPS / 1e9:g} GFLOPs): on a CPU that is seconds to minutes a step"
            f"{suggestion}")


def describe(cost: Cost) -> str:
    return f"{cost.parameters:,} parameters, {flops_text(cost.flops)}"


def flops_text(flops: int) -> str:
    if flops >= 1e9:
        return f"{flops / 1e9:.2f} GFLOPs"
    return f"{flops / 1e6:.1f} MFLOPs"
