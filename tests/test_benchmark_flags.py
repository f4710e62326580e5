"""--mixed-precision and --jit-compile: parsing, and short real training runs with each.

(fp16 runs: tests/test_loss_scale.py; auto: tests/test_precision.py.)
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_training import scalars, train
from trainer import models
from trainer.config import config_from_flags
from trainer.errors import TrainerError


def test_defaults_are_auto_precision_without_xla():
    config = config_from_flags([], {})
    assert config.model.mixed_precision == "auto" and config.model.jit_compile is False


@pytest.mark.parametrize("flags, precision, jit", [
    (["--mixed-precision", "bf16"], "bf16", False),
    (["--mixed_precision=none"], "none", False),
    (["--jit-compile"], "auto", True),
    (["--jit-compile", "false"], "auto", False),
    (["--jit_compile=TRUE", "--mixed-precision=bf16"], "bf16", True),
])
def test_flags_parse(flags, precision, jit):
    config = config_from_flags(flags, {})
    assert (config.model.mixed_precision, config.model.jit_compile) == (precision, jit)


@pytest.mark.parametrize("flags", [["--mixed-precision", "fp8"], ["--jit-compile=maybe"]])
def test_bad_values_are_one_line_errors(flags):
    with pytest.raises(TrainerError, match=flags[0].split("=")[0]):
        config_from_flags(flags, {})


@pytest.mark.parametrize("flag", ["--mixed-precision=bf16", "--jit-compile"])
def test_training_lowers_the_loss_and_exports_float32(dataset, tmp_path, flag):
    result = train(dataset, tmp_path, flag, "--max-steps", "40", "--log-every-steps", "10",
                   "--eval-every-steps", "40")
    losses = scalars(tmp_path / "logs" / "train", "loss")
    assert losses[-1][1] < 0.5 * losses[0][1]
    assert result.metrics["accuracy"] > 0.8
    assert tf.keras.mixed_precision.global_policy().name == "float32"

    model = models.build_model("dnn", (28, 28, 1), 10, 0.0)
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    expected = tf.nn.softmax(model(images, training=False)).numpy()
    outputs = tf.saved_model.load(result.export_path).signatures["serving_default"](
        image=tf.constant(images))
    assert outputs["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
