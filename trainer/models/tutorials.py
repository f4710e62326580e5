"""The classic TensorFlow tutorials' MNIST models, rebuilt as Keras 3 functional models."""

from __future__ import annotations


def dnn(input_shape, num_classes, dropout):
    from keras import Input, Model, layers

    inputs = Input(input_shape, name="image")
    x = layers.Flatten()(inputs)
    for units in (512, 256, 128):
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name="dnn")


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
