"""The model registry: name -> builder and the hyperparameters it trains with by default.

Every builder returns logits (no softmax): the loss is computed from logits for numerical
stability and the export adds the softmax. Builders import Keras only when called, so flag
parsing (trainer.config) lists and validates models without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trainer.models import applications, footprint, resnet, tutorials


@dataclass(frozen=True)
class ModelSpec:
    """A model and the hyperparameters its paper or tutorial trained it with."""

    build: Callable  # (input_shape, num_classes, dropout, weights=None) -> keras.Model
    footprint: Callable  # (input_shape, num_classes) -> footprint.Footprint, without building
    description: str
    optimizer: str
    learning_rate: float
    dropout: float
    weight_decay: float = 0.0
    backbone: bool = False  # a keras.applications backbone (applications.backbone_of)
    pooled: bool = False  # global pooling: its weights do not grow with the image
    min_size: int = 1  # smallest image height and width the model accepts
    channels: tuple[int, ...] | None = None  # image channels it accepts; None: any

    def accepts(self, shape: tuple[int, int, int]) -> bool:
        return min(shape[:2]) >= self.min_size and (self.channels is None
                                                    or shape[2] in self.channels)


def _application(name: str, description: str) -> ModelSpec:
    return ModelSpec(applications.builder(name), applications.footprint(name), description,
                     optimizer="adam", learning_rate=1e-3, dropout=0.2, backbone=True,
                     pooled=True, min_size=32, channels=(1, 3))


def _resnet(blocks_per_stage: int) -> ModelSpec:
    # He et al. 2016, section 4.2: SGD with momentum 0.9 from 0.1, weight decay 1e-4.
    return ModelSpec(resnet.builder(blocks_per_stage), resnet.footprint(blocks_per_stage),
                     f"CIFAR ResNet-{6 * blocks_per_stage + 2}, 16/32/64 filters (He et al. "
                     "2016)", optimizer="momentum", learning_rate=0.1, dropout=0.0,
                     weight_decay=1e-4, pooled=True)


MODELS: dict[str, ModelSpec] = {
    "dnn": ModelSpec(tutorials.dnn, tutorials.dnn_footprint,
                     "dense 512-256-128 relu (DNNClassifier tutorial)",
                     optimizer="adagrad", learning_rate=0.05, dropout=0.0),
    "cnn_small": ModelSpec(tutorials.conv_pool_dense("cnn_small", (16, 36), 128),
                           tutorials.conv_pool_dense_footprint((16, 36), 128),
                           "conv16-conv36-dense128 (Estimator API tutorial)",
                           optimizer="adam", learning_rate=1e-4, dropout=0.0),
    "cnn": ModelSpec(tutorials.conv_pool_dense("cnn", (32, 64), 1024),
                     tutorials.conv_pool_dense_footprint((32, 64), 1024),
                     "conv32-conv64-dense1024-dropout (Deep MNIST / Estimator tutorial)",
                     optimizer="adam", learning_rate=1e-3, dropout=0.4),
    "cnn_bn": ModelSpec(tutorials.cnn_bn, tutorials.cnn_bn_footprint,
                        "5 conv + BatchNorm, dense 200 (Keras-to-Estimator tutorial)",
                        optimizer="adam", learning_rate=1e-3, dropout=0.5),
    "resnet20": _resnet(3),
    "resnet56": _resnet(9),
    "mobilenet_v3_small": _application("mobilenet_v3_small",
                                       "keras.applications MobileNetV3Small + new head"),
    "efficientnet_v2_b0": _application("efficientnet_v2_b0",
                                       "keras.applications EfficientNetV2B0 + new head"),
    "resnet50": _application("resnet50", "keras.applications ResNet50 + new head"),
}


def misfit(name: str, shape: tuple[int, int, int], num_classes: int) -> str | None:
    """A warning when the model is far too large for the input, naming models that fit."""
    return footprint.misfit(name, shape, num_classes,
                            {n: spec.footprint for n, spec in MODELS.items()},
                            lambda other: MODELS[other].pooled and MODELS[other].accepts(shape))


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, dropout: float,
                weights: str | None = None):
    """Builds the named model; `name` has been validated against MODELS by the config.
    `weights` (backbone models only): "imagenet" or a .weights.h5 file of the backbone."""
    spec = MODELS[name]
    if spec.backbone:
        return spec.build(input_shape, num_classes, dropout, weights=weights)
    return spec.build(input_shape, num_classes, dropout)


OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop", "adagrad")


def build_optimizer(name: str, learning_rate, weight_decay: float = 0.0,
                    clip_norm: float | None = None, ema_decay: float | None = None):
    """A Keras optimizer by flag name; `momentum` is SGD with Nesterov-free momentum 0.9.

    `learning_rate` is a number or a keras LearningRateSchedule. Weight decay is decoupled
    (Adam becomes AdamW), and spares biases and normalization parameters. `clip_norm` clips
    the global gradient norm; `ema_decay` keeps an exponential moving average of the weights.
    """
    import keras

    from trainer.fused_adam import FusedAdam

    options = {"weight_decay": weight_decay or None, "global_clipnorm": clip_norm,
               "use_ema": ema_decay is not None, "ema_momentum": ema_decay or 0.99}
    optimizers = {
        "adam": lambda: (keras.optimizers.AdamW(learning_rate, **options) if weight_decay
                         else FusedAdam(learning_rate, **options)),
        "sgd": lambda: keras.optimizers.SGD(learning_rate, **options),
        "momentum": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9, **options),
        "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate, **options),
        "adagrad": lambda: keras.optimizers.Adagrad(learning_rate, **options),
    }
    optimizer = optimizers[name]()
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
