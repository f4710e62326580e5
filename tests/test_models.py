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


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_models_follow_image_shape_and_class_count(name):
    model = models.build_model(name, (32, 20, 3), 4, 0.25)
    assert model(np.zeros((3, 32, 20, 3), np.float32), training=True).shape == (3, 4)


@pytest.mark.parametrize("name", models.OPTIMIZERS)
def test_every_optimizer_flag_value_builds(name):
    optimizer = models.build_optimizer(name, 0.01)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
