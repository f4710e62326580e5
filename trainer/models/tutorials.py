"""The classic TensorFlow tutorials' MNIST models, rebuilt as Keras 3 functional models, and
their footprints (weights, kept activations and multiply-adds, worked out without building
them)."""

from __future__ import annotations

from trainer.models.footprint import Footprint, Tally

_DNN_UNITS = (512, 256, 128)


def dnn(input_shape, num_classes, dropout):
    from keras import Input, Model, layers

    inputs = Input(input_shape, name="image")
    x = layers.Flatten()(inputs)
    for units in _DNN_UNITS:
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name="dnn")


def dnn_footprint(input_shape, num_classes) -> Footprint:
    tally = Tally(input_shape).keep()  # the flatten
    for units in _DNN_UNITS:
        tally.dense(units)
    return tally.dense(num_classes).footprint()


def conv_pool_dense(name: str, filters: tuple[int, int], dense_units: int):
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


def conv_pool_dense_footprint(filters: tuple[int, int], dense_units: int):
    def footprint(input_shape, num_classes) -> Footprint:
        tally = Tally(input_shape)
        for count in filters:
            tally.conv(count, 5).pool()
        return tally.keep().dense(dense_units).dense(num_classes).footprint()

    return footprint


def cnn_bn(input_shape, num_classes, dropout):
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


def cnn_bn_footprint(input_shape, num_classes) -> Footprint:
    tally = Tally(input_shape)

    def conv_bn(filters):
        tally.conv(filters, 3, bias=False).norm(3).keep()  # BatchNorm: beta, mean, variance

    for filters, convs in ((32, 2), (64, 2), (128, 1)):
        for _ in range(convs):
            conv_bn(filters)
        tally.pool()
    tally.keep().dense(200, bias=False).norm(3).keep()
    return tally.dense(num_classes).footprint()
