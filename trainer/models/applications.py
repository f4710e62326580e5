"""keras.applications backbones under a new classification head, for fine-tuning.

The model takes images scaled to [0, 1], as the data pipeline and every export signature feed
them, and applies the backbone's own ImageNet preprocessing inside itself; grey images are
repeated to the three channels the backbones expect. The backbone is the model's one nested
model (`backbone_of`), so fine-tuning can freeze it and a weights file can be loaded into it.
"""

from __future__ import annotations

import os
import tempfile

from trainer.models.footprint import Footprint

# name -> (keras.applications constructor, whether it has an include_preprocessing option)
_BACKBONES = {
    "mobilenet_v3_small": ("MobileNetV3Small", True),
    "efficientnet_v2_b0": ("EfficientNetV2B0", True),
    "resnet50": ("ResNet50", False),
}
# name -> (weights, features pooled, layer output values per input pixel, multiply-adds per
# input pixel and fixed), as built here (tests/test_memory.py and test_models.py check them):
# the weights do not depend on the image size (global pooling), the activations grow with its
# pixels (measured at 224x224x3), the multiply-adds are per-pixel x H x W + fixed (measured at
# 224x224 and 96x96: exact at sizes that are multiples of 32; elsewhere the strides' rounding
# makes small images cost up to ~40% more, e.g. 33x45).
_SIZES = {
    "mobilenet_v3_small": (939_120, 576, 106, 1084.9375, 458_752),
    "efficientnet_v2_b0": (5_919_312, 1280, 315, 14265.28125, 1_031_424),
    "resnet50": (23_587_712, 2048, 742, 76848, 0),
}
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # ResNet50's preprocess_input, mode "caffe"
# A BatchNorm layer's moving variance usually starts at 1 and keeps momentum**step of it.
# MobileNetV3's depthwise convolutions (Keras initialises their kernels for fan-in 9 x channels)
# output variances of 1e-5-1e-2, and at Keras' 0.999 or our former 0.99 that remnant (0.043 at
# step 313) outweighed the true variance 4-45 times in every depthwise layer of a from-scratch
# model: inference squeezed their outputs towards zero, compounding over 11 blocks, and every
# eval image became one class (10.00% at 99% training accuracy on 1,000 digit photos). So a
# backbone built without weights starts its moving variances at 0 (each then underestimates by
# momentum**step: 3% at step 32), and 0.9 makes the statistics trail the weights by ~10 steps
# instead of ~100 (the same run: 59.5% at step 63, 74-84% from step 219). Loaded weights
# keep their own statistics.
BATCH_NORM_MOMENTUM = 0.9


def builder(name: str):
    def build(input_shape, num_classes, dropout, weights=None):
        return _build(name, input_shape, num_classes, dropout, weights)

    return build


def footprint(name: str):
    weights, features, kept_per_pixel, multiply_adds_per_pixel, fixed = _SIZES[name]

    def of(input_shape, num_classes) -> Footprint:
        pixels = input_shape[0] * input_shape[1]
        return Footprint(weights + (features + 1) * num_classes,
                         kept_per_pixel * pixels + num_classes,
                         round(multiply_adds_per_pixel * pixels) + fixed
                         + features * num_classes)

    return of


def _build(name, input_shape, num_classes, dropout, weights):
    import keras
    from keras import Input, Model, layers

    constructor, has_preprocessing = _BACKBONES[name]
    height, width, channels = input_shape
    options = {"include_preprocessing": True} if has_preprocessing else {}
    backbone = getattr(keras.applications, constructor)(
        include_top=False, weights="imagenet" if weights == "imagenet" else None,
        input_shape=(height, width, 3), pooling="avg", **options)
    if weights not in (None, "imagenet"):
        load_backbone_weights(backbone, weights)
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = min(layer.momentum, BATCH_NORM_MOMENTUM)
            if weights is None:
                layer.moving_variance.assign(keras.ops.zeros_like(layer.moving_variance))

    class CaffePreprocessing(layers.Layer):
        """RGB -> BGR and the ImageNet mean subtracted, on 0-255 pixels."""

        def call(self, x):
            return x[..., ::-1] - keras.ops.convert_to_tensor(_CAFFE_BGR_MEAN, x.dtype)

    inputs = Input(input_shape, name="image")
    x = layers.Rescaling(255.0)(inputs)  # the backbones' preprocessing expects 0-255 pixels
    if channels == 1:
        x = layers.Concatenate()([x, x, x])
    if not has_preprocessing:
        x = CaffePreprocessing()(x)
    x = backbone(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)


def backbone_of(model):
    """The backbone inside a model built here."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def load_backbone_weights(backbone, path: str) -> None:
    """Loads a .weights.h5 file (as `backbone.save_weights` writes) into the backbone, after
    checking that it holds the same layers and shapes: Keras itself would load what fits and
    warn about the rest."""
    import h5py
    import tensorflow as tf

    from trainer.errors import TrainerError

    flag = "--pretrained-weights"
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, "given.weights.h5")
        expected_path = os.path.join(scratch, "expected.weights.h5")
        try:
            tf.io.gfile.copy(path, local)
            given = _layout(h5py.File(local, "r"))
        except (tf.errors.OpError, OSError) as err:
            raise TrainerError(f"{flag}: cannot read {path} as a .weights.h5 file "
                               f"({str(err).splitlines()[0]}); expected 'imagenet' or a file "
                               "written by a backbone's save_weights") from None
        backbone.save_weights(expected_path)
        expected = _layout(h5py.File(expected_path, "r"))
        for (want_name, want_shape), (got_name, got_shape) in zip(expected, given):
            if (want_name, want_shape) != (got_name, got_shape):
                raise TrainerError(
                    f"{flag}: {path} does not fit the backbone: its layer {_layer(want_name)} "
                    f"expects {want_name} of shape {list(want_shape)}, the file has "
                    f"{got_name} of shape {list(got_shape)}")
        if len(given) != len(expected):
            extra_or_missing = (given if len(given) > len(expected) else expected)[
                min(len(given), len(expected))][0]
            raise TrainerError(f"{flag}: {path} does not fit the backbone: the file has "
                               f"{len(given)} weight arrays, the backbone {len(expected)}; "
                               f"first unmatched: layer {_layer(extra_or_missing)}")
        backbone.load_weights(local)


def _layout(file) -> list[tuple[str, tuple[int, ...]]]:
    arrays = []
    with file:
        file.visititems(lambda name, item: arrays.append((name, item.shape))
                        if hasattr(item, "shape") else None)
    return arrays


def _layer(array_path: str) -> str:
    """The layer an array belongs to: layers/<layer>/vars/0 -> <layer>."""
    parts = array_path.split("/")
    return parts[-3] if len(parts) >= 3 and parts[-2] == "vars" else array_path
