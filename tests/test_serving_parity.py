"""LiteRT serves what the SavedModel serves: every model family the trainer builds, through all
three signatures, on held-out images of the bundled sample, within 1e-5.

Weights are the builders' own with every BatchNorm's statistics moved off their initial values
(as training moves them) and the head scaled so the probabilities are not saturated: parity of a
one-hot output would prove little. The backbones run at their smallest input, 32 x 32 x 3, which
sends the 28 x 28 grey digits through the grey-to-RGB conversion and the resize. Exporting and
converting `efficientnet_v2_b0` and `resnet50` takes 2-4 minutes each on 2 cores, so those two
run only with VT_TEST_SLOW_PARITY=1.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.exports import DIGITS, current_example, png
from trainer import export, models, serve
from trainer.data import images as tf_images
from trainer.records import IMAGE
from trainer.serving import runtime

SAMPLE = "trainer/sample/eval-00000-of-00001.tfrecord.gz"
COUNT = 24


def held_out_digits() -> np.ndarray:
    records = tf.data.TFRecordDataset(SAMPLE, "GZIP").take(COUNT)
    spec = {IMAGE: tf.io.FixedLenFeature([], tf.string)}
    return np.stack([np.frombuffer(tf.io.parse_single_example(r, spec)[IMAGE].numpy(),
                                   np.uint8).reshape(28, 28, 1) for r in records])


def as_trained(model, inputs: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    weights = []
    for variable, value in zip(model.weights, model.get_weights()):
        if "moving_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, value.shape)
        elif "moving_mean" in variable.path:
            value = rng.normal(0, 0.1, value.shape)
        weights.append(value.astype(variable.dtype))
    model.set_weights(weights)
    head = [layer for layer in model.layers if getattr(layer, "kernel", None) is not None][-1]
    spread = float(np.std(model(inputs, training=False)))
    head.kernel.assign(head.kernel * (2.0 / max(spread, 1e-3)))
    head.bias.assign(head.bias * (2.0 / max(spread, 1e-3)))


SLOW = {"efficientnet_v2_b0", "resnet50"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.skipif(
        name in SLOW and os.environ.get("VT_TEST_SLOW_PARITY") != "1",
        reason="minutes to export and convert; set VT_TEST_SLOW_PARITY=1"))
    for name in models.MODELS])
def test_litert_predicts_as_the_saved_model(name, tmp_path):
    shape = (28, 28, 1) if models.MODELS[name].min_size <= 28 else (32, 32, 3)
    digits = held_out_digits()
    encoded = [png(image) for image in digits]
    floats = tf_images.eval_images(tf.constant(encoded), shape).numpy()
    keras.utils.set_random_seed(0)
    model = models.build_model(name, shape, 10, models.MODELS[name].dropout)
    as_trained(model, floats)
    path = str(tmp_path / "export")
    export.write_saved_model(model, path, shape, DIGITS)
    signatures = tf.saved_model.load(path).signatures
    pixels = np.round(floats * 255).astype(np.uint8)
    inputs = {"serving_default": {"image": floats},
              "encoded_image": {"image_bytes": np.array(encoded, object)},
              "tf_example": {"example_bytes": np.array([current_example(p) for p in pixels],
                                                       object)}}
    slim = runtime.load_litert(path, DIGITS, 8, convert=True)
    predictor = serve.Predictor(slim, COUNT, batch_max_size=8)
    try:
        for signature, arrays in inputs.items():
            want = signatures[signature](**{k: tf.constant(v) for k, v in arrays.items()})
            queue, payload = slim.prepare(signature, arrays, "instances")
            (got,) = slim.run(queue, [payload])
            np.testing.assert_allclose(got["probabilities"], want["probabilities"].numpy(),
                                       atol=1e-5, err_msg=signature)
            np.testing.assert_array_equal(got["classes"], want["classes"].numpy())
            np.testing.assert_array_equal(got["labels"], want["labels"].numpy())
        assert 0.15 < want["probabilities"].numpy().max(axis=1).mean() < 0.999  # not saturated
        # And over the server's request path: columnar JSON in, JSON out.
        body = json.dumps({"inputs": floats.tolist()}).encode()
        answer = predictor.predict(body)["outputs"]
        np.testing.assert_allclose(answer["probabilities"],
                                   signatures["serving_default"](image=floats)[
                                       "probabilities"].numpy(), atol=1e-5)
    finally:
        predictor.close()
