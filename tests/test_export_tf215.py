"""Our TF 2.21 / Keras 3 exports load and predict identically under TensorFlow 2.15.

TF 2.15 is the newest TensorFlow of Vertex's prebuilt prediction images (tf2-cpu.2-15). The
test runs tests/tf215_predict.py in a cached TF 2.15 environment (trainer/benchmarks/tf215_env.py,
which the benchmark's estimator baseline shares; built with pip the first time, which needs
PyPI) through both of 2.15's loaders: tf.saved_model.load, and the TF1 session loader TF Serving
uses. It never skips: an environment that cannot be built
fails the test with pip's reason.
"""

import base64
import json
import subprocess

import numpy as np
import pytest

from tests import tf215_predict
from tests.conftest import REPO
from tests.exports import (DIGITS, classic_example, current_example, expected, export_model,
                           images, jpeg, png, scaled)
from trainer.benchmarks import tf215_env

MODELS = {  # name: (shape, class names or a class count)
    "cnn": ((28, 28, 1), DIGITS),
    "cnn_bn": ((32, 20, 3), 4),
    "dnn": ((28, 28, 1), 10),
}


def cases_for(path, shape, pixels):
    larger = np.repeat(np.repeat(pixels[0], 2, axis=0), 3, axis=1)
    encoded = [png(image) for image in pixels] + [jpeg(pixels[1]), png(larger)]
    records = [current_example(pixels[0]), current_example(pixels[1], shape_fields=False),
               classic_example(pixels[2]), classic_example(pixels[3], dtype=np.uint8)]
    return [
        {"model": path, "signature": "serving_default", "input": "image",
         "npy": f"{path}-images.npy"},
        {"model": path, "signature": "encoded_image", "input": "image_bytes",
         "b64": [base64.b64encode(data).decode() for data in encoded]},
        {"model": path, "signature": "tf_example", "input": "example_bytes",
         "b64": [base64.b64encode(data).decode() for data in records]},
    ]


def outputs(directory, count):
    return [{mode: dict(np.load(directory / f"{index}-{mode}.npz"))
             for mode in ("eager", "session")} for index in range(count)]


def test_exports_predict_the_same_under_tf_2_15(tmp_path):
    try:
        python = tf215_env.python()
    except tf215_env.EnvironmentBuildError as err:
        pytest.fail(f"cannot build the TensorFlow {tf215_env.VERSION} environment: {err}",
                    pytrace=False)
    cases, keras_models = [], {}
    for name, (shape, classes) in MODELS.items():
        class_names = classes if isinstance(classes, list) else None
        num_classes = len(classes) if class_names else classes
        model, path = export_model(tmp_path / name, name, shape, num_classes, class_names)
        pixels = images(4, shape, seed=len(cases))
        np.save(f"{path}-images.npy", scaled(pixels))
        keras_models[path] = (model, pixels)
        cases += cases_for(path, shape, pixels)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    for version in ("new", "old"):
        (tmp_path / version).mkdir()
    tf215_predict.main(str(tmp_path / "cases.json"), str(tmp_path / "new"))
    done = subprocess.run([python, str(REPO / "tests" / "tf215_predict.py"),
                           str(tmp_path / "cases.json"), str(tmp_path / "old")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"TF {tf215_env.VERSION} could not run the export:\n" + \
        done.stderr[-3000:]

    new, old = outputs(tmp_path / "new", len(cases)), outputs(tmp_path / "old", len(cases))
    assert str(old[0]["eager"]["tf_version"]) == tf215_env.VERSION
    for case, reference, under_215 in zip(cases, new, old):
        if case["signature"] == "serving_default":
            model, pixels = keras_models[case["model"]]
            np.testing.assert_allclose(reference["eager"]["probabilities"],
                                       expected(model, pixels), atol=1e-5)
        for result in (reference["session"], under_215["eager"], under_215["session"]):
            assert set(result) == set(reference["eager"]), case["signature"]
            np.testing.assert_allclose(result["probabilities"], reference["eager"]["probabilities"],
                                       atol=1e-5, err_msg=f"{case['model']} {case['signature']}")
            np.testing.assert_array_equal(result["classes"], reference["eager"]["classes"])
            if "labels" in result:
                np.testing.assert_array_equal(result["labels"], reference["eager"]["labels"])
