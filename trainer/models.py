"""The classic TensorFlow tutorials' MNIST models, rebuilt as Keras 3 functional models.

Every builder returns logits (no softmax): the loss is computed from logits for numerical
stability and the export adds the softmax. Keras is imported inside the builders so that flag
parsing can list and validate models without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ModelSpec:
    """A model and the hyperparameters its tutorial trained it with."""

    build: Callable  # (input_shape, num_classes, dropout) -> keras.Model
    description: str
    optimizer: str
    learning_rate: float
    dropout: float


def _dnn(input_shape, num_classes, dropout):
    from keras import Input, Model, layers

    inputs = Input(input_shape, name="image")
    x = layers.Flatten()(inputs)
    for units in (512, 256, 128):
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name="dnn")


def _conv_pool_dense(name: str, filters: tuple[int, int], dense_units: int):
    """The tutorials' CNN shape: two 5x5 conv + 2x2 max-pool blocks, one dense layer."""

    def build(input_shape, num_classes, dropout):
        from keras import Input, Model, layers

        inputs = Input(input_shape, name="image")
        x = inputs
        for count in filters:
            x = layers.Conv2D(count, 5, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2, padding="same")(x)
        x = layers.Dense(dense_units, activation="relu")(layers.Flatten()(x))
        if dropout:
            x = layers.Dropout(dropout)(x)
        return Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)

    return build


def _cnn_bn(input_shape, num_classes, dropout):
    from keras import Input, Model, layers

    def conv_bn(x, filters, kernel):
        # The tutorial's order: conv without bias, BatchNorm (scale-free before relu), relu.
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(scale=False, center=True)(x)
        return layers.Activation("relu")(x)

    inputs = Input(input_shape, name="image")
    x = conv_bn(inputs, 32, 3)
    x = conv_bn(x, 32, 3)
    x = layers.Dropout(0.2)(layers.MaxPooling2D(2, padding="same")(x))
    x = conv_bn(x, 64, 3)
    x = conv_bn(x, 64, 3)
    x = layers.Dropout(0.3)(layers.MaxPooling2D(2, padding="same")(x))
    x = conv_bn(x, 128, 3)
    x = layers.Dropout(0.4)(layers.MaxPooling2D(2, padding="same")(x))
    x = layers.Dense(200, use_bias=False)(layers.Flatten()(x))
    x = layers.Activation("relu")(layers.BatchNormalization(scale=False, center=True)(x))
    x = layers.Dropout(dropout)(x)
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name="cnn_bn")


MODELS: dict[str, ModelSpec] = {
    "dnn": ModelSpec(_dnn, "dense 512-256-128 relu (DNNClassifier tutorial)",
                     optimizer="adagrad", learning_rate=0.05, dropout=0.0),
    "cnn_small": ModelSpec(_conv_pool_dense("cnn_small", (16, 36), 128), "conv16-conv36-dense128 (Estimator API tutorial)",
                           optimizer="adam", learning_rate=1e-4, dropout=0.0),
    "cnn": ModelSpec(_conv_pool_dense("cnn", (32, 64), 1024), "conv32-conv64-dense1024-dropout (Deep MNIST / Estimator tutorial)",
                     optimizer="adam", learning_rate=1e-3, dropout=0.4),
    "cnn_bn": ModelSpec(_cnn_bn, "5 conv + BatchNorm, dense 200 (Keras-to-Estimator tutorial)",
                        optimizer="adam", learning_rate=1e-3, dropout=0.5),
}


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, dropout: float):
    """Builds the named model; `name` has been validated against MODELS by the config."""
    return MODELS[name].build(input_shape, num_classes, dropout)


OPTIMIZERS = ("adam", "sgd", "momentum", "rmsprop", "adagrad")


def build_optimizer(name: str, learning_rate: float):
    """A Keras optimizer by flag name; `momentum` is SGD with Nesterov-free momentum 0.9."""
    import keras

    optimizers = {
        "adam": lambda: keras.optimizers.Adam(learning_rate),
        "sgd": lambda: keras.optimizers.SGD(learning_rate),
        "momentum": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9),
        "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate),
        "adagrad": lambda: keras.optimizers.Adagrad(learning_rate),
    }
    return optimizers[name]()
