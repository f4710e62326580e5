"""The prediction server over real HTTP on 127.0.0.1: every signature, every bad request."""

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.exports import (DIGITS, classic_example, current_example, expected, export_model,
                           images, png, scaled, webp)
from tests.serving import request, server_process, server_thread
from trainer import serve
from trainer.errors import TrainerError

MAX_INSTANCES = 8
MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_model(tmp_path_factory.mktemp("serve") / "model", class_names=DIGITS)


@pytest.fixture(scope="module", params=["litert", "tensorflow"])
def port(model, request):
    """The server on each runtime: every check below holds for both."""
    with server_thread(model[1], max_instances=MAX_INSTANCES, max_request_bytes=MAX_BYTES,
                       runtime=request.param) as port:
        yield port


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def check_rows(predictions, probabilities):
    assert len(predictions) == len(probabilities)
    for prediction, want in zip(predictions, probabilities):
        assert set(prediction) == {"probabilities", "classes", "labels"}
        np.testing.assert_allclose(prediction["probabilities"], want, atol=1e-5)
        assert prediction["classes"] == want.argmax()
        assert prediction["labels"] == DIGITS[want.argmax()]


PIXELS = images(3)


@pytest.mark.parametrize("path, body", [
    ("/predict", {"instances": scaled(PIXELS).tolist()}),
    ("/predict", {"instances": [{"image": image} for image in scaled(PIXELS).tolist()]}),
    ("/v1/models/model:predict", {"signature_name": "serving_default",
                                  "instances": scaled(PIXELS).tolist()}),
    ("/predict", {"instances": [{"image_bytes": b64(png(image))} for image in PIXELS],
                  "parameters": {"signature_name": "encoded_image"}}),
    ("/v1/models/model:predict", {"signature_name": "encoded_image",
                                  "instances": [b64(png(image)) for image in PIXELS]}),
    ("/predict", {"signature_name": "tf_example", "instances": [
        {"example_bytes": b64(current_example(PIXELS[0]))},
        {"example_bytes": b64(current_example(PIXELS[1], shape_fields=False))},
        {"example_bytes": b64(classic_example(PIXELS[2]))}]}),
], ids=["float-bare", "float-named", "tf-serving-route", "png-vertex-parameters",
        "png-tf-serving", "tf-example"])
def test_every_signature_predicts_over_http(model, port, path, body):
    status, response = request(port, "POST", path, body)
    assert status == 200, response
    check_rows(response["predictions"], expected(model[0], PIXELS))


def test_columnar_inputs_get_columnar_outputs(model, port):
    want = expected(model[0], PIXELS)
    for body in ({"inputs": {"image": scaled(PIXELS).tolist()}},
                 {"inputs": scaled(PIXELS).tolist()}):
        status, response = request(port, "POST", "/predict", body)
        assert status == 200, response
        outputs = response["outputs"]
        np.testing.assert_allclose(outputs["probabilities"], want, atol=1e-5)
        assert outputs["classes"] == want.argmax(axis=1).tolist()
        assert outputs["labels"] == [DIGITS[c] for c in want.argmax(axis=1)]


def test_health(port):
    assert request(port, "GET", "/health") == (200, {
        "status": "ok", "signatures": ["encoded_image", "serving_default", "tf_example"]})


IMAGE = scaled(PIXELS[:1]).tolist()[0]
PNG = b64(png(PIXELS[0]))


@pytest.mark.parametrize("body, message", [
    (b"{bad", "request body is not valid JSON (Expecting property name"),
    (b"\xff\xfe\x00", "request body is not valid JSON"),
    (b'{"instances": [NaN]}', "request body is not valid JSON (NaN is not valid JSON)"),
    (b"[" * 100_000, "request body nests too deeply"),
    ([1, 2], "request body must be a JSON object"),
    ({}, 'give exactly one of "instances" (row format) and "inputs"'),
    ({"instances": [IMAGE], "inputs": [IMAGE]}, 'give exactly one of "instances"'),
    ({"instances": [IMAGE], "instance": 1}, "unknown request field(s) ['instance']"),
    ({"instances": [IMAGE], "signature_name": "nope"},
     "unknown signature_name 'nope'; this model has ['encoded_image', 'serving_default', "
     "'tf_example']"),
    ({"instances": [IMAGE], "signature_name": 3}, "signature_name: must be a string"),
    ({"instances": [IMAGE], "parameters": {"signature_name": "encoded_image"},
      "signature_name": "tf_example"}, "signature_name and parameters.signature_name disagree"),
    ({"instances": [IMAGE], "parameters": {"top_k": 3}}, "parameters: unknown key(s) ['top_k']"),
    ({"instances": [IMAGE], "parameters": []}, "parameters: must be a JSON object"),
    ({"instances": IMAGE[0][0]}, "instances[0]: expected float32 of shape [28, 28, 1], got "
                                 "shape []"),
    ({"instances": [IMAGE[:27]]}, "instances[0]: expected float32 of shape [28, 28, 1], got "
                                  "shape [27, 28, 1]"),
    ({"instances": [{"image": IMAGE[:1]}]}, "instances[0].image: expected float32 of shape "
                                           "[28, 28, 1], got shape [1, 28, 1]"),
    ({"instances": [IMAGE, [[0.5]]]}, "instances[1]: expected float32 of shape [28, 28, 1]"),
    ({"instances": [[[0.5], [0.5, 0.5]]]}, "instances[0]: nested lists of unequal lengths"),
    ({"instances": ["abc"]}, "instances[0]: expected float32 of shape [28, 28, 1], got "
                             "non-numbers"),
    ({"instances": [[[1e300]]]}, "instances[0]: holds a number too large for float32"),
    ({"instances": [{"img": IMAGE}]}, "instances[0]: has inputs ['img']; signature "
                                      "'serving_default' takes ['image']"),
    ({"instances": {"image": IMAGE}}, "instances: must be a list"),
    ({"instances": []}, "instances: holds no instances"),
    ({"instances": [IMAGE] * (MAX_INSTANCES + 1)},
     f"instances: holds {MAX_INSTANCES + 1} instances; at most {MAX_INSTANCES} are accepted per "
     "request (--max-instances)"),
    ({"inputs": {"image": [IMAGE] * (MAX_INSTANCES + 1)}},
     f"inputs.image: holds {MAX_INSTANCES + 1} instances"),
    ({"inputs": IMAGE[:2]}, "inputs: expected float32 of shape [N, 28, 28, 1], got shape "
                            "[2, 28, 1]"),
    ({"signature_name": "encoded_image", "instances": [{"b64": "not base64!"}]},
     "instances[0]: invalid base64"),
    ({"signature_name": "encoded_image", "instances": [{"b64": 7}]},
     'instances[0]: "b64" must hold a base64 string'),
    ({"signature_name": "encoded_image", "instances": [[1, 2]]},
     'instances[0]: expected a string or {"b64": "..."}, got int'),
    ({"signature_name": "encoded_image", "instances": [{"image_bytes": [PNG, PNG]}]},
     'instances[0].image_bytes: expected a string or {"b64": "..."}, got shape [2]'),
    ({"signature_name": "encoded_image", "instances": [b64(b"GIF? no")]},
     "instances[0].image_bytes: cannot read the image's size (not a PNG, JPEG, GIF or BMP "
     "image)"),
    ({"signature_name": "encoded_image", "instances": [b64(webp(PIXELS[0]))]},
     "instances[0].image_bytes: cannot read the image's size (not a PNG, JPEG, GIF or BMP"),
    ({"signature_name": "encoded_image", "instances": [PNG, b64(png(np.zeros((2000, 2000, 1),
                                                                            np.uint8)))]},
     "instances[1].image_bytes: the image declares 4,000,000 pixels; at most 3,211,264 are "
     "accepted (--max-image-pixels)"),
    ({"signature_name": "tf_example", "instances": [b64(b"\x08garbage")]},
     "tf_example: Could not parse example input"),
    ({"signature_name": "tf_example", "instances": [{"example_bytes": {"b64": "/wBnYXJiYWdl"}}]},
     "tf_example: Could not parse example input"),
    ({"signature_name": "tf_example", "inputs": [b64(bytes(4 * 784 + 1025))]},
     "inputs[0].example_bytes: a serialized example of 4,161 bytes; this model's records take "
     "at most 4,160"),
    ({"instances": [[[[True]] * 28] * 28]}, "instances[0][0][0][0]: JSON true/false is not "
                                           "accepted; send numbers or strings"),
    ({"instances": [IMAGE, {"image": IMAGE[:27] + [[[0.5]] * 27 + [[False]]]}]},
     "instances[1].image[27][27][0]: JSON true/false is not accepted"),
    ({"signature_name": "tf_example", "instances": [b64(current_example(PIXELS[0][:20]))]},
     "tf_example: example_bytes: a record holds an image of the wrong size; expected feature "
     "image of 784 uint8 bytes"),
    (b"x" * (MAX_BYTES + 1), f"request body is over {MAX_BYTES} bytes (--max-request-bytes)"),
    (lambda: iter([b"x" * 65536] * 4), f"request body is over {MAX_BYTES} bytes"),  # chunked
])
def test_bad_requests_get_400_with_one_line_and_the_server_keeps_serving(port, body, message):
    status, response = request(port, "POST", "/predict", body() if callable(body) else body)
    assert status == 400, response
    assert set(response) == {"error"} and message in response["error"], response["error"]
    assert "\n" not in response["error"]
    assert request(port, "POST", "/predict", {"instances": [IMAGE]})[0] == 200


def test_unknown_routes_models_and_methods_are_json_errors(port):
    status, response = request(port, "POST", "/v1/models/other:predict", {"instances": [IMAGE]})
    assert (status, response) == (404, {"error": "model 'other' not found; this server serves "
                                                 "'model'"})
    status, response = request(port, "GET", "/nowhere")
    assert status == 404 and response["error"].startswith("Not Found: GET /nowhere")
    status, response = request(port, "GET", "/predict")
    assert status == 405 and "predictions go to POST /predict" in response["error"]


def test_vertex_environment_configures_the_server_process(model):
    routes = {"AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
              "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict"}
    env = {"AIP_STORAGE_URI": model[1], "AIP_HTTP_PORT": "0", **routes}
    with server_process(env=env) as (process, port):
        assert request(port, "GET", routes["AIP_HEALTH_ROUTE"])[0] == 200
        status, response = request(port, "POST", routes["AIP_PREDICT_ROUTE"],
                                   {"instances": [{"image_bytes": PNG}],
                                    "parameters": {"signature_name": "encoded_image"}})
        assert status == 200, response
        check_rows(response["predictions"], expected(model[0], PIXELS[:1]))
        process.send_signal(signal.SIGTERM)
        # Uvicorn shuts down, then re-raises the signal it captured.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        # LiteRT's C++ notice of its default delegate is kept off the server's output.
        assert "XNNPACK" not in process.stderr.read()


def one_line_error(done, code, message):
    assert done.returncode == code, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, env, code, message", [
    ([], {}, 2, "--model-dir is required (or set $AIP_STORAGE_URI)"),
    (["--model-dir", "m", "--port", "http"], {}, 2, "argument --port: expected a port number"),
    (["--model-dir", "m"], {"AIP_HTTP_PORT": "x"}, 2, "also from $AIP_HTTP_PORT), got 'x'"),
    (["--model-dir", "m", "--predict-route", "predict"], {}, 2,
     "--predict-route must be a path starting with '/'"),
    (["--model-dir", "m", "--max-instances", "0"], {}, 2, "--max-instances must be positive"),
    (["--model-dir", "m", "--max-image-pixels", "-1"], {}, 2,
     "--max-image-pixels must be positive"),
    (["--model-dir", "m", "--batch-max-size", "0"], {}, 2, "--batch-max-size must be positive"),
    (["--model-dir", "m", "--batch-timeout-ms", "nan"], {}, 2,
     "--batch-timeout-ms must be between 0 and 10000"),
    (["--model-dir", "m", "--runtime", "onnx"], {}, 2, "argument --runtime: invalid choice"),
    (["--model-dir", "{tmp}"], {}, 1, "--model-dir: {tmp} holds no saved_model.pb"),
])
def test_server_flag_and_model_errors_are_one_line(tmp_path, args, env, code, message):
    args = [arg.format(tmp=tmp_path) for arg in args]
    done = subprocess.run([sys.executable, "-m", "trainer.serve", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    one_line_error(done, code, message.format(tmp=tmp_path))


def test_a_corrupt_saved_model_is_a_one_line_error_at_start(model, tmp_path):
    damaged = tmp_path / "model"
    shutil.copytree(model[1], damaged)
    (damaged / "saved_model.pb").write_bytes((damaged / "saved_model.pb").read_bytes()[:3000])
    done = subprocess.run([sys.executable, "-m", "trainer.serve", "--model-dir", str(damaged),
                           "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    one_line_error(done, 1, f"--model-dir: cannot load the SavedModel at {damaged} (Cannot parse "
                            f"file b'{damaged}/saved_model.pb'")
    assert done.stderr.splitlines()[-1].startswith("error: ")


def test_a_client_that_disconnects_mid_body_is_no_prediction_failure(port, caplog):
    caplog.set_level(logging.DEBUG, logger="trainer.serve")
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                       + b"{" * 1000)
    def handled():  # the server's verdict on the cut request, either way
        return [record for record in caplog.records if record.name == "trainer.serve" and (
            record.levelno >= logging.WARNING or "disconnected" in record.getMessage())]

    for _ in range(10_000):
        if handled():
            break
        assert request(port, "GET", "/health")[0] == 200
    assert [record.levelname for record in handled()] == ["DEBUG"], caplog.text[-2000:]


def test_a_busy_port_is_a_one_line_error(model):
    sock = serve.listen("127.0.0.1", 0)
    try:
        done = subprocess.run([sys.executable, "-m", "trainer.serve", "--model-dir", model[1],
                               "--port", str(sock.getsockname()[1])], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    finally:
        sock.close()
    one_line_error(done, 1, "--host/--port: cannot listen on 127.0.0.1:")


def test_rows_and_columns_without_a_server():
    signature = serve.Signature("s", {"a": serve.InputSpec(np.dtype("float32"), (None, 2)),
                                      "b": serve.InputSpec(None, (None,))}, ("out",))
    arrays = serve.rows_to_arrays([{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": b64(b"\0")}],
                                  signature, 4)
    assert arrays["a"].tolist() == [[1, 2], [3, 4]] and arrays["b"].tolist() == [b"x", b"\0"]
    with pytest.raises(serve.BadRequest, match=r"inputs: batches of different sizes"):
        serve.columns_to_arrays({"a": [[1, 2]], "b": ["x", "y"]}, signature, 4)
    with pytest.raises(serve.BadRequest, match=r"instances\[0\]: expected an object with the "
                                                r"inputs \['a', 'b'\]"):
        serve.rows_to_arrays([[1, 2]], signature, 4)
    assert json.loads(json.dumps(serve._jsonable("x_bytes", np.array([b"\xff"], object)))) == \
        [{"b64": "/w=="}]


def test_an_export_litert_cannot_take_is_served_by_tensorflow_with_a_one_line_notice(tmp_path,
                                                                                     caplog):
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def double(self, x):
            return {"y": 2 * x}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.double})
    caplog.set_level(logging.WARNING, logger="trainer.serve")
    model = serve.load_model(str(tmp_path), "auto", 8)
    assert model.runtime == "TensorFlow"
    (notice,) = [r.getMessage() for r in caplog.records if r.name == "trainer.serve"]
    assert notice.startswith("serving with TensorFlow: LiteRT cannot serve it: its signatures ")
    assert "\n" not in notice
    predictor = serve.Predictor(model, 4)
    try:
        assert predictor.predict(b'{"instances": [[1, 2]]}') == {"predictions": [[2.0, 4.0]]}
    finally:
        predictor.close()
    with pytest.raises(TrainerError, match=r"^--runtime litert: LiteRT cannot serve it: its "
                                           r"signatures .* are not trainer.export's$"):
        serve.load_model(str(tmp_path), "litert", 8)
