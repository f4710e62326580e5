"""The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2).

6n+2 layers: a 3x3 conv of 16 filters, then three stages of n basic blocks (two 3x3 convs,
each followed by BatchNorm) with 16, 32 and 64 filters, the second and third stage starting at
stride 2, then global average pooling and the classifier. Shortcuts are the paper's option A,
as in its CIFAR experiments: identities, zero-padded with extra channels and subsampled where
a stage halves the feature map, so the net has no parameters beyond the plain net's.
n=3 is ResNet-20 (0.27M parameters, published CIFAR-10 error 8.75%), n=9 ResNet-56 (0.85M,
6.97%).
"""

from __future__ import annotations

from trainer.models.footprint import Footprint, Tally

_FILTERS = (16, 32, 64)


def builder(blocks_per_stage: int):
    def build(input_shape, num_classes, dropout):
        return _resnet(input_shape, num_classes, dropout, blocks_per_stage)

    return build


def footprint(blocks_per_stage: int):
    """The network's weights, kept activations and multiply-adds, layer by layer as `_resnet`
    stacks them."""
    def of(input_shape, num_classes) -> Footprint:
        tally = Tally(input_shape).conv(_FILTERS[0], 3, bias=False).norm(4).keep()
        for stage, filters in enumerate(_FILTERS):
            for block in range(blocks_per_stage):
                strides = 2 if stage and not block else 1
                tally.conv(filters, 3, bias=False, strides=strides).norm(4).keep()
                tally.conv(filters, 3, bias=False).norm(4)
                tally.keep(2 if strides == 1 else 3)  # (the padded shortcut,) the sum, its relu
        return tally.global_pool().dense(num_classes).footprint()

    return of


def _resnet(input_shape, num_classes, dropout, blocks_per_stage):
    import keras
    from keras import Input, Model, layers

    def conv_bn(x, filters, strides=1):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                          kernel_initializer="he_normal")(x)
        return layers.BatchNormalization()(x)

    class PaddedShortcut(layers.Layer):
        """Option A: subsample by 2 and zero-pad the new channels."""

        def __init__(self, extra_channels, **kwargs):
            super().__init__(**kwargs)
            self.extra_channels = extra_channels

        def call(self, x):
            x = x[:, ::2, ::2, :]
            return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra_channels]])

    inputs = Input(input_shape, name="image")
    x = layers.Activation("relu")(conv_bn(inputs, _FILTERS[0]))
    channels = _FILTERS[0]
    for stage, filters in enumerate(_FILTERS):
        for block in range(blocks_per_stage):
            strides = 2 if stage and not block else 1
            y = layers.Activation("relu")(conv_bn(x, filters, strides))
            y = conv_bn(y, filters)
            shortcut = x if strides == 1 else PaddedShortcut(filters - channels)(x)
            x = layers.Activation("relu")(layers.Add()([shortcut, y]))
            channels = filters
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    name = f"resnet{6 * blocks_per_stage + 2}"
    return Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)
