"""Every registered model and optimizer builds, for any image shape and class count."""

import numpy as np
import pytest

from trainer import models


@pytest.mark.parametrize("name, params", [
    ("dnn", 567_434), ("cnn_small", 242_062), ("cnn", 3_274_634), ("cnn_bn", 551_698)])
def test_tutorial_models_have_their_architectures(name, params):
    model = models.build_model(name, (28, 28, 1), 10, models.MODELS[name].dropout)
    assert model.count_params() == params
    assert model(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("name, trainable", [("resnet20", 269_722), ("resnet56", 853_018)])
def test_cifar_resnets_have_the_papers_parameter_counts(name, trainable):
    # He et al. 2016, table 6: 0.27M and 0.85M (option A shortcuts add no parameters).
    model = models.build_model(name, (32, 32, 3), 10, 0.0)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == trainable


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_models_follow_image_shape_and_class_count(name):
    shape = (max(32, models.MODELS[name].min_size), max(20, models.MODELS[name].min_size), 3)
    model = models.build_model(name, shape, 4, 0.25)
    assert model(np.zeros((3, *shape), np.float32), training=True).shape == (3, 4)


@pytest.mark.parametrize("name", models.OPTIMIZERS)
def test_every_optimizer_flag_value_builds(name):
    optimizer = models.build_optimizer(name, 0.01)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    decayed = models.build_optimizer(name, 0.01, weight_decay=1e-4, clip_norm=1.0,
                                     ema_decay=0.99)
    assert (decayed.weight_decay, decayed.global_clipnorm, decayed.use_ema) == (1e-4, 1.0, True)


def test_fused_adam_matches_keras_adam():
    import keras
    import tensorflow as tf

    from trainer.fused_adam import FusedAdam

    rng = np.random.default_rng(0)
    start = [rng.standard_normal((6, 4)).astype(np.float32), np.zeros(4, np.float32)]
    results = []
    for optimizer in (keras.optimizers.Adam(0.01), FusedAdam(0.01)):
        weights = [tf.Variable(w) for w in start]
        for step in range(5):
            grads = [tf.constant(rng_step, tf.float32) for rng_step in (
                np.random.default_rng(step).standard_normal((6, 4)),
                np.random.default_rng(step + 10).standard_normal(4))]
            optimizer.apply_gradients(zip(grads, weights))
        results.append([w.numpy() for w in weights])
    assert np.abs(results[1][0] - start[0]).max() > 0.01  # it trained
    for keras_adam, fused in zip(*results):
        np.testing.assert_allclose(fused, keras_adam, atol=1e-6)


def multiply_adds(model) -> int:
    """The forward pass's multiply-adds, read from the built layers' shapes (no data run)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            height, width, channels = layer.output.shape[1:]
            total += height * width * channels * int(np.prod(layer.kernel_size))
        elif isinstance(layer, keras.layers.Conv2D):
            height, width, filters = layer.output.shape[1:]
            total += (height * width * filters * int(np.prod(layer.kernel_size))
                      * layer.input.shape[-1] // layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("shape", [(28, 28, 1), (33, 45, 3), (64, 96, 3)])
def test_the_cost_estimate_is_the_built_models(name, shape):
    spec = models.MODELS[name]
    if not spec.accepts(shape):
        return
    built, estimate = models.build_model(name, shape, 7, 0.2), spec.footprint(shape, 7)
    assert estimate.weights == built.count_params()
    if not spec.backbone or all(d % 32 == 0 for d in shape[:2]):
        assert estimate.multiply_adds == multiply_adds(built)
    else:  # the strides' rounding, which the per-pixel figure leaves out
        assert 0.55 < estimate.multiply_adds / multiply_adds(built) <= 1


def test_the_readme_example_of_old_is_a_warning_naming_the_models_that_fit():
    assert models.MODELS["cnn"].footprint((224, 224, 3), 10).weights == 205_585_866
    warning = models.misfit("cnn", (224, 224, 3), 10)
    assert warning.startswith("--model cnn on 224x224x3 images: 205,585,866 parameters, "
                              "1.94 GFLOPs per example, far beyond what the input needs")
    assert [part.split(" (")[0] for part in warning.split("models that fit it: ")[1].split(
        "), ")] == ["mobilenet_v3_small", "efficientnet_v2_b0", "resnet20"]
    assert models.misfit("resnet56", (224, 224, 3), 10).startswith(  # 12.3 GFLOPs
        "--model resnet56 on 224x224x3 images: 857,082 parameters, 12.30 GFLOPs")
    for name, shape in (("cnn", (28, 28, 1)), ("cnn", (64, 64, 3)), ("cnn_small", (224, 224, 3)),
                        ("resnet50", (224, 224, 3)), ("mobilenet_v3_small", (512, 512, 3))):
        assert models.misfit(name, shape, 10) is None, name
    # Channels the backbones do not take: only the ResNets are named.
    assert models.misfit("dnn", (28, 28, 64), 10).split("fit it: ")[1].startswith(
        "resnet20 (")
