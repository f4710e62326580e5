"""Hostile request bodies: the corpus under tests/corpus/serving/ over HTTP on both runtimes,
property-based bodies (hypothesis) against the request parser, and batching's promises."""

import base64
import json
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.exports import DIGITS, current_example, export_model, images, png, scaled
from tests.serving import request, server_thread
from trainer import serve

CORPUS = Path(__file__).parent / "corpus" / "serving"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_model(tmp_path_factory.mktemp("requests") / "model", class_names=DIGITS)[1]


@pytest.fixture(scope="module", params=["litert", "tensorflow"])
def port(model_dir, request):
    with server_thread(model_dir, runtime=request.param) as port:
        yield port


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_bodies_are_one_line_400s_and_the_server_keeps_serving(port, name):
    status, response = request(port, "POST", "/predict", (CORPUS / f"{name}.body").read_bytes())
    assert status == 400, response
    assert set(response) == {"error"} and "\n" not in response["error"]
    # A list: the runtimes word it differently (LiteRT's decoder, or TensorFlow's).
    wanted = EXPECTED[name] if isinstance(EXPECTED[name], list) else [EXPECTED[name]]
    assert any(text in response["error"] for text in wanted), response["error"]
    assert request(port, "GET", "/health")[0] == 200


@pytest.fixture(scope="module", params=["litert", "tensorflow"])
def predictor(model_dir, request):
    model = serve.load_model(model_dir, request.param, 8)
    predictor = serve.Predictor(model, 8, batch_max_size=8, batch_timeout=0.2)
    yield predictor
    predictor.close()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


KEYS = st.sampled_from(["instances", "inputs", "signature_name", "parameters", "b64", "image",
                        "image_bytes", "example_bytes", "encoded_image", "tf_example", "x"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False, width=32)
           | st.sampled_from(["serving_default", "encoded_image", "tf_example", "iVBORw0K",
                              "/9j/", "R0lGODlh", "Qk0=", "", "true"])
           | st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=6)
                    | st.dictionaries(KEYS, inner, max_size=4), max_leaves=40)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                             "utf-32", "utf-32-le", "utf-32-be"])
REQUESTS = st.fixed_dictionaries({}, optional={
    "instances": JSON, "inputs": JSON,
    "signature_name": st.sampled_from(["serving_default", "encoded_image", "tf_example", "x"]),
    "parameters": JSON})


def _bodies():
    encoded = st.builds(lambda value, encoding: json.dumps(value).encode(encoding),
                        REQUESTS | JSON, ENCODINGS)
    mangled = st.builds(lambda body, cut, junk: body[:cut] + junk + body[cut:],
                        encoded, st.integers(0, 64), st.binary(max_size=4))
    return encoded | mangled | st.binary(max_size=256)


def _answer_or_bad_request(predictor, body: bytes):
    try:
        return predictor.predict(body)
    except serve.BadRequest as err:
        assert "\n" not in str(err)
        return None


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_bodies())
def test_any_body_is_an_answer_or_a_one_line_bad_request(predictor, body):
    tracemalloc.start()
    try:
        _answer_or_bad_request(predictor, body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # What a request may hold is a small multiple of its body, plus its decoded images.
    assert peak < 200 * len(body) + (16 << 20), (peak, len(body))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pixels=st.lists(st.integers(0, 255), min_size=1, max_size=64),
       height=st.integers(1, 40), width=st.integers(1, 40), encoding=ENCODINGS,
       signature=st.sampled_from(["encoded_image", "tf_example"]))
def test_real_images_and_examples_of_any_size_predict_or_are_refused_in_one_line(
        predictor, pixels, height, width, encoding, signature):
    image = np.resize(np.array(pixels, np.uint8), (height, width, 1))
    data = png(image) if signature == "encoded_image" else current_example(image)
    body = json.dumps({"signature_name": signature, "instances": [b64(data)]}).encode(encoding)
    answer = _answer_or_bad_request(predictor, body)
    # Any PNG decodes; an example fits only the model's own 28 x 28.
    assert (answer is not None) == (signature == "encoded_image" or (height, width) == (28, 28))


def test_concurrent_requests_share_batches_and_a_bad_one_fails_alone(predictor, monkeypatch):
    pixels = images(6)
    good = [json.dumps({"signature_name": "tf_example",
                        "instances": [b64(current_example(image))]}).encode()
            for image in pixels]
    bad = json.dumps({"signature_name": "tf_example",
                      "instances": [b64(current_example(pixels[0][:20]))]}).encode()
    alone = [predictor.predict(body)["predictions"][0]["probabilities"] for body in good]
    bodies = good[:3] + [bad] + good[3:]
    results: dict[int, object] = {}

    # However the threads are scheduled, the first model call waits until every request is
    # prepared and queued (the bad one may be refused while prepared), so the rest must share.
    counts = {"prepared": 0, "refused": 0, "submitted": 0}
    lock, everyone_queued = threading.Lock(), threading.Event()
    prepare, submit, run = predictor.prepare, predictor.submit, predictor.model.run

    def note(key):
        with lock:
            counts[key] += 1
            if counts["prepared"] + counts["refused"] == len(bodies) and \
                    counts["submitted"] == counts["prepared"]:
                everyone_queued.set()

    def counted_prepare(body):
        try:
            prepared = prepare(body)
        except serve.BadRequest:
            note("refused")
            raise
        note("prepared")
        return prepared

    def counted_submit(prepared):
        future = submit(prepared)
        note("submitted")
        return future

    def gated_run(queue, payloads):
        assert everyone_queued.wait(60)
        return run(queue, payloads)

    monkeypatch.setattr(predictor, "prepare", counted_prepare)
    monkeypatch.setattr(predictor, "submit", counted_submit)
    monkeypatch.setattr(predictor.model, "run", gated_run)

    def send(index, body):
        try:
            results[index] = predictor.predict(body)
        except serve.BadRequest as err:
            results[index] = err

    before = sum(count for size, count in predictor.batch_sizes().items() if size > 1)
    threads = [threading.Thread(target=send, args=(i, body)) for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(results[3], serve.BadRequest)
    assert "a record holds an image of the wrong size" in str(results[3])
    answers = [results[i] for i in (0, 1, 2, 4, 5, 6)]
    np.testing.assert_allclose([a["predictions"][0]["probabilities"] for a in answers], alone,
                               atol=1e-6)
    assert sum(count for size, count in predictor.batch_sizes().items() if size > 1) > before


def test_the_float_input_batches_with_the_same_results(predictor):
    pixels = images(4)
    bodies = [json.dumps({"instances": scaled(pixels[i:i + 1]).tolist()}).encode()
              for i in range(4)]
    alone = [predictor.predict(body)["predictions"][0]["probabilities"] for body in bodies]
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, predictor.predict(bodies[i]))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_allclose([r["predictions"][0]["probabilities"] for r in results], alone,
                               atol=1e-6)
