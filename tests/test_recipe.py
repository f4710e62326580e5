"""Learning-rate schedules, label smoothing and weight averaging, in isolation."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import ema, loop, models, schedules
from trainer.config import config_from_flags


def learning_rate(config):
    return schedules.learning_rate(config.recipe, config.model.learning_rate,
                                   config.loop.max_steps)


def rates(*flags):
    schedule = learning_rate(config_from_flags(["--max-steps", "100", *flags], {}))
    return [float(schedule(step)) for step in (0, 4, 9, 10, 55, 80, 99)]


def test_constant_rate_without_a_schedule_stays_a_plain_number():
    assert learning_rate(config_from_flags(["--learning-rate", "0.3"], {})) == 0.3


@pytest.mark.parametrize("kind, expected", [
    ("constant", [0.01, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1]),
    ("cosine", [0.01, 0.05, 0.1, 0.1, 0.05 * (1 + math.cos(math.pi * 0.5)),
                0.05 * (1 + math.cos(math.pi * 70 / 90)), 0.05 * (1 + math.cos(math.pi * 89 / 90))]),
    ("linear", [0.01, 0.05, 0.1, 0.1, 0.05, 0.1 * 20 / 90, 0.1 / 90]),
    ("step", [0.01, 0.05, 0.1, 0.1, 0.01, 0.001, 0.001]),
])
def test_schedules_warm_up_then_decay(kind, expected):
    assert rates("--learning-rate", "0.1", "--lr-schedule", kind, "--warmup-steps", "10") == \
        pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_a_frozen_backbone_restarts_the_schedule_at_the_fine_tune_rate():
    config = config_from_flags([
        "--model", "resnet50", "--image-height", "32", "--image-width", "32", "--max-steps", "100",
        "--learning-rate", "0.1", "--lr-schedule", "linear", "--freeze-backbone-steps", "50",
        "--fine-tune-learning-rate", "0.02"], {})
    schedule = learning_rate(config)
    assert [float(schedule(s)) for s in (0, 25, 49, 50, 75, 99)] == pytest.approx(
        [0.1, 0.05, 0.002, 0.02, 0.01, 0.0004], rel=1e-5)


def test_label_smoothing_raises_the_loss_of_a_confident_right_answer():
    steps = loop.StepFunctions(tf.distribute.get_strategy(), None)
    logits, labels = tf.constant([[8.0, 0.0, 0.0]]), tf.constant([0])
    plain = float(steps._sums(logits, labels)[0][0])
    smoothed = float(steps._sums(logits, labels, label_smoothing=0.3)[0][0])
    expected = -(0.8 * np.log(1 / (1 + 2 * np.exp(-8))) + 2 * 0.1 * np.log(
        np.exp(-8) / (1 + 2 * np.exp(-8))))
    assert plain < 0.01 and smoothed == pytest.approx(expected, rel=1e-5)


def test_averaged_weights_swap_in_the_moving_average_and_back():
    model = models.build_model("dnn", (4, 4, 1), 3, 0.0)
    optimizer = models.build_optimizer("sgd", 0.5, ema_decay=0.5)
    optimizer.build(model.trainable_variables)
    for _ in range(3):
        optimizer.apply_gradients([(tf.ones_like(v), v) for v in model.trainable_variables])
    trained = [v.numpy() for v in model.trainable_variables]
    with ema.averaged_weights(model, optimizer):
        averaged = [v.numpy() for v in model.trainable_variables]
    # Each step moves every weight by -0.5; the average (decay 0.5, starting at the first
    # step's weights) is at -0.5, -0.75, -1.125 while the weights are at -0.5, -1, -1.5.
    np.testing.assert_allclose(averaged[0] - trained[0], 0.375, atol=1e-6)
    for before, after in zip(trained, model.trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())
