"""The server loads its model from $AIP_STORAGE_URI on gs:// (tests/fake_gcs.py; loopback only)."""

from pathlib import Path

import numpy as np

from tests.exports import DIGITS, expected, export_model, images, scaled
from tests.fake_gcs import FakeGcs
from tests.serving import request, server_process


def test_the_model_is_loaded_from_gcs_at_start(tmp_path):
    model, local = export_model(tmp_path / "model", class_names=DIGITS)
    (tmp_path / "gcs").mkdir()
    gcs = FakeGcs(tmp_path / "gcs").start()
    try:
        gcs.create_bucket("bkt")
        gcs.upload(Path(local), "bkt", "models/1")
        with server_process(env={**gcs.env, "AIP_STORAGE_URI": "gs://bkt/models/1",
                                 "AIP_HTTP_PORT": "0"}) as (_, port):
            pixels = images(2)
            status, response = request(port, "POST", "/predict",
                                       {"instances": scaled(pixels).tolist()})
    finally:
        gcs.stop()
    assert status == 200, response
    np.testing.assert_allclose([p["probabilities"] for p in response["predictions"]],
                               expected(model, pixels), atol=1e-5)
    assert [p["labels"] for p in response["predictions"]] == \
        [DIGITS[c] for c in expected(model, pixels).argmax(axis=1)]


def test_without_tensorflow_the_stored_litert_model_is_read_from_gcs(tmp_path, monkeypatch):
    """The slim image's path: no TensorFlow, so gs:// goes through google-cloud-storage."""
    import json

    from trainer import serve
    from trainer.serving import litert

    model, local = export_model(tmp_path / "model", class_names=DIGITS)
    litert.write_beside(local)
    (tmp_path / "gcs").mkdir()
    gcs = FakeGcs(tmp_path / "gcs").start()
    try:
        gcs.create_bucket("bkt")
        gcs.upload(Path(local), "bkt", "models/2")
        for key, value in gcs.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(serve, "_has_tensorflow", lambda: False)
        loaded = serve.load_model("gs://bkt/models/2", "auto", 8)
        predictor = serve.Predictor(loaded, 8)
        pixels = images(2)
        answer = predictor.predict(json.dumps({"instances": scaled(pixels).tolist()}).encode())
        predictor.close()
    finally:
        gcs.stop()
    assert loaded.runtime == "LiteRT"
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]],
                               expected(model, pixels), atol=1e-5)
    assert [p["labels"] for p in answer["predictions"]] == \
        [DIGITS[c] for c in expected(model, pixels).argmax(axis=1)]
