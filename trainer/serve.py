"""Prediction server for a SavedModel from trainer.task: `python -m trainer.serve`.

It follows Vertex AI's custom-container contract: it listens on `$AIP_HTTP_PORT` (8080),
answers health checks with 200 at `GET $AIP_HEALTH_ROUTE` (/health) and predictions at
`POST $AIP_PREDICT_ROUTE` (/predict), and loads the model once, at start, from
`$AIP_STORAGE_URI` (a gs:// directory; any local path works too). It also answers TF Serving's
REST `POST /v1/models/<--model-name>:predict`. Flags override the variables.

Requests: `{"instances": [...]}` (row format: one input object per instance, or the bare value
for a one-input signature) or `{"inputs": ...}` (columnar: one batch per input, or the bare batch);
the signature is `serving_default` unless `"signature_name"` (TF Serving) or
`"parameters": {"signature_name": ...}` (Vertex's `predict`, which forwards only `instances` and
`parameters`) names another. Binary strings travel as `{"b64": "..."}`, and outputs whose name
ends in `_bytes` are returned so. Responses: `{"predictions": [...]}` (one object per instance,
or the bare value for a one-output signature) or, for columnar requests, `{"outputs": ...}`.
Every bad request (malformed JSON, unknown fields or signature, wrong shapes or types, JSON
booleans in any of JSON's encodings, bad b64, more than --max-instances instances, a body over
--max-request-bytes, an image whose header declares more than --max-image-pixels, whose
resize-to-cover would exceed trainer/image_bounds.py's bound, or that is not PNG/JPEG/GIF/BMP, a
serialized example larger than the model's largest valid record) gets HTTP 400
`{"error": "<one line>"}`; the server keeps serving.

Runtimes (trainer/serving/runtime.py): LiteRT with XNNPACK when the export converts (the
conversion stored in the export, or made at start where TensorFlow is installed), the server then
decoding images and parsing examples itself exactly as the signatures do; else, or with
`--runtime tensorflow` (GPUs), the SavedModel in TensorFlow, announced by a one-line notice.
The model is loaded, converted and warmed before the port opens, so `/health` answers 200 only
when predictions are fast; the log line says how long that took.

Batching (trainer/serving/batching.py): concurrent requests are gathered into one model call of
up to --batch-max-size instances, waiting at most --batch-timeout-ms for requests still being
parsed; a lone request never waits. A bad request is answered alone and never fails its
batch-mates.

Cost bounds: the request body is capped before it is buffered; encoded images are measured from
their headers (trainer/image_header.py) before anything decodes them, so a few hundred bytes
declaring 16000 x 16000 pixels cost nothing; at most --max-concurrent-predictions requests are
parsed and decoded at a time, and the instances waiting for a batch are capped at twice
max(--max-instances, --batch-max-size), so peak memory is bounded (README, "Serve predictions",
states the measured figures).

Starlette on Uvicorn: a maintained, small ASGI stack (anyio, h11) with explicit routing and
streaming request bodies (so the size cap holds before a body is buffered); parsing runs in
Starlette's thread pool and model calls on each batch queue's thread, so health checks answer
while a prediction runs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import importlib.util
import json
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from trainer import image_bounds, image_header
from trainer.cli import OneLineParser, run_cli, usage_errors
from trainer.data.labels import FILE_NAME as LABELS_FILE
from trainer.errors import TrainerError, short_reason
from trainer.logs import log_to_stdout
from trainer.serving import batching, files, images, litert, runtime
from trainer.serving.runtime import (DEFAULT_SIGNATURE, EXAMPLE_BYTES, IMAGE_BYTES, InputSpec,
                                     Signature)

log = logging.getLogger("trainer.serve")

RUNTIMES = ("auto", "litert", "tensorflow")
VERTEX_MAX_REQUEST_BYTES = 1_500_000  # shared public endpoints' cap
_DRAIN_BYTES = 64 << 20  # over-size bodies up to this are read, so the client gets its 400
_REQUEST_FIELDS = ("instances", "inputs", "signature_name", "parameters")
_IMAGE_PIXELS_PER_MODEL_PIXEL = 4096
_MAX_DEFAULT_IMAGE_PIXELS = 1 << 24
_EXAMPLE_OVERHEAD_BYTES = 1024  # label, height/width/depth and the proto framing of a record


class BadRequest(Exception):
    """A client error; the message is the one-line `error` of the 400 response."""


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _strings(value, where: str):
    if isinstance(value, list):
        return [_strings(item, where) for item in value]
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise BadRequest(f'{where}: "b64" must hold a base64 string')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as err:
            raise BadRequest(f"{where}: invalid base64 ({err})") from None
    if isinstance(value, str):
        return value.encode()
    raise BadRequest(f'{where}: expected a string or {{"b64": "..."}}, got '
                     f"{type(value).__name__}")


def to_array(value, spec: InputSpec, where: str, batched: bool) -> np.ndarray:
    """A JSON value as an array of `spec`'s type and (instance or batch) shape."""
    expected = spec.describe(batched)
    try:
        if spec.dtype is None:
            array = np.array(_strings(value, where), dtype=object)
            ragged = not all(isinstance(item, bytes) for item in array.flat)
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise BadRequest(f"{where}: expected {expected}, got non-numbers")
            with np.errstate(over="ignore"):  # overflow is reported below, as a bad request
                array = array.astype(spec.dtype)
            ragged = False
    except ValueError:
        ragged = True
    if ragged:
        raise BadRequest(f"{where}: nested lists of unequal lengths; expected {expected}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequest(f"{where}: holds a number too large for {spec.dtype.name}")
    shape = spec.shape if batched else spec.shape[1:]
    if array.ndim != len(shape) or any(d is not None and d != n
                                       for d, n in zip(shape, array.shape)):
        raise BadRequest(f"{where}: expected {expected}, got shape {list(array.shape)}")
    return array


def _named(value, signature: Signature, where: str) -> dict:
    """{input name: value} of an instance or of the columnar `inputs`."""
    names = list(signature.inputs)
    if isinstance(value, dict) and not _is_b64(value):
        if set(value) != set(names):
            raise BadRequest(f"{where}: has inputs {sorted(value)}; signature {signature.name!r} "
                             f"takes {names}")
        return value
    if len(names) != 1:
        raise BadRequest(f"{where}: expected an object with the inputs {names} of signature "
                         f"{signature.name!r}")
    return {names[0]: value}


def _check_count(count: int, where: str, max_instances: int) -> None:
    if count == 0:
        raise BadRequest(f"{where}: holds no instances")
    if count > max_instances:
        raise BadRequest(f"{where}: holds {count} instances; at most {max_instances} are "
                         "accepted per request (--max-instances)")


def rows_to_arrays(instances, signature: Signature, max_instances: int) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise BadRequest("instances: must be a list (one entry per instance)")
    _check_count(len(instances), "instances", max_instances)
    columns: dict[str, list] = {name: [] for name in signature.inputs}
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        named = _named(instance, signature, where)
        for name, spec in signature.inputs.items():
            label = f"{where}.{name}" if named is instance else where
            columns[name].append(to_array(named[name], spec, label, batched=False))
    try:
        return {name: np.stack(arrays) for name, arrays in columns.items()}
    except ValueError:  # only where a signature leaves an instance dimension open
        raise BadRequest("instances: differ in shape; a batch needs equal shapes") from None


def columns_to_arrays(inputs, signature: Signature, max_instances: int) -> dict[str, np.ndarray]:
    named = _named(inputs, signature, "inputs")
    arrays = {}
    for name, spec in signature.inputs.items():
        where = f"inputs.{name}" if named is inputs else "inputs"
        if isinstance(named[name], list):
            _check_count(len(named[name]), where, max_instances)
        arrays[name] = to_array(named[name], spec, where, batched=True)
    if len({len(array) for array in arrays.values()}) > 1:
        raise BadRequest(f"inputs: batches of different sizes "
                         f"{ {name: len(array) for name, array in arrays.items()} }")
    return arrays


def _jsonable(name: str, array: np.ndarray):
    if array.dtype == object:
        encode = ((lambda v: {"b64": base64.b64encode(v).decode()}) if name.endswith("_bytes")
                  else (lambda v: v.decode("utf-8", "replace")))
        return np.frompyfunc(encode, 1, 1)(array).tolist()
    return array.tolist()


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _boolean_at(value, where: str) -> str | None:
    """The path of the first JSON boolean in `value`, if any."""
    if isinstance(value, bool):
        return where
    if isinstance(value, list):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{where}.{key}", item) for key, item in value.items())
    else:
        return None
    for path, item in items:
        found = _boolean_at(item, path)
        if found:
            return found
    return None


def _body_text(body: bytes) -> str:
    """The body decoded as JSON texts are (RFC 8259: UTF-8, or UTF-16/32 told by the first
    bytes), so every check after this one reads the text the JSON parser reads."""
    encoding = json.detect_encoding(body)
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as err:
        name = encoding.upper().replace("-SIG", "")
        raise BadRequest(f"request body is not valid JSON (not {name}: {err.reason} at byte "
                         f"{err.start})") from None


def parse_body(body: bytes):
    text = _body_text(body)
    try:
        request = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("request body nests too deeply") from None
    except ValueError as err:
        raise BadRequest(f"request body is not valid JSON ({err})") from None
    if not isinstance(request, dict):
        raise BadRequest('request body must be a JSON object: {"instances": [...]} or '
                         '{"inputs": ...}')
    unknown = sorted(set(request) - set(_REQUEST_FIELDS))
    if unknown:
        raise BadRequest(f"unknown request field(s) {unknown}; expected instances or inputs, and "
                         "optionally signature_name and parameters")
    if ("instances" in request) == ("inputs" in request):
        raise BadRequest('give exactly one of "instances" (row format) and "inputs" (columnar '
                         "format)")
    # NumPy would read true/false as 1/0. Only a text holding the words can hold a boolean, so
    # ordinary requests skip the walk.
    if "true" in text or "false" in text:
        field = "instances" if "instances" in request else "inputs"
        try:
            found = _boolean_at(request[field], field)
        except RecursionError:
            raise BadRequest("request body nests too deeply") from None
        if found:
            raise BadRequest(f"{found}: JSON true/false is not accepted; send numbers or "
                             "strings")
    return request


def _signature_name(request: dict) -> str:
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("parameters: must be a JSON object")
    unknown = sorted(set(parameters) - {"signature_name"})
    if unknown:
        raise BadRequest(f"parameters: unknown key(s) {unknown}; only signature_name is read")
    given = [holder["signature_name"] for holder in (request, parameters)
             if "signature_name" in holder]
    if not all(isinstance(name, str) for name in given):
        raise BadRequest("signature_name: must be a string")
    if len(set(given)) > 1:
        raise BadRequest("signature_name and parameters.signature_name disagree")
    return given[0] if given else DEFAULT_SIGNATURE


@dataclass(frozen=True)
class Limits:
    """What one request may ask the model to decode."""

    max_instances: int
    max_image_pixels: int
    image_shape: tuple[int, int, int] | None  # the model's float input: bounds the resizing
    max_example_bytes: int | None  # None: the model has no float image input to size it by


def default_max_image_pixels(image_shape: tuple[int, ...] | None) -> int:
    """A generous multiple of the model's own input; 2^24 when that is unknown or larger."""
    if image_shape is None:
        return _MAX_DEFAULT_IMAGE_PIXELS
    return min(_IMAGE_PIXELS_PER_MODEL_PIXEL * image_shape[0] * image_shape[1],
               _MAX_DEFAULT_IMAGE_PIXELS)


def max_example_bytes(image_shape: tuple[int, ...] | None) -> int | None:
    """The largest valid record: the classic schema's float32 `image_raw` and small fields."""
    if image_shape is None:
        return None
    return 4 * int(np.prod(image_shape)) + _EXAMPLE_OVERHEAD_BYTES


def _check_image(data: bytes, where: str, limits: Limits) -> None:
    try:
        count = image_header.pixels(data)
    except image_header.HeaderError as err:
        raise BadRequest(f"{where}: cannot read the image's size ({err}); expected a "
                         f"{image_header.FORMATS} image") from None
    if count > limits.max_image_pixels:
        raise BadRequest(f"{where}: the image declares {count:,} pixels; at most "
                         f"{limits.max_image_pixels:,} are accepted (--max-image-pixels)")
    if limits.image_shape is None:
        return
    try:
        height, width = images.size(data)
    except images.ImageError as err:
        raise BadRequest(f"{where}: {err}") from None
    problem = image_bounds.cover_problem(height, width, limits.image_shape[:2])
    if problem:
        raise BadRequest(f"{where}: {problem}")


def _check_example(data: bytes, where: str, limits: Limits) -> None:
    if limits.max_example_bytes is not None and len(data) > limits.max_example_bytes:
        raise BadRequest(f"{where}: a serialized example of {len(data):,} bytes; this model's "
                         f"records take at most {limits.max_example_bytes:,}")


def check_payloads(arrays: Mapping[str, np.ndarray], limits: Limits, field: str) -> None:
    """Refuses byte inputs that would cost more to decode than this model's limits allow."""
    checks = {IMAGE_BYTES: _check_image, EXAMPLE_BYTES: _check_example}
    for name, array in arrays.items():
        check = checks.get(name)
        if check is None or array.dtype != object:
            continue
        for index, data in enumerate(array.flat):
            check(data, f"{field}[{index}].{name}", limits)


@dataclass
class Prepared:
    """One request between its preparation and its answer."""

    rows: bool
    count: int
    queue: str
    payload: object
    outputs: tuple[str, ...]


class Predictor:
    """Turns request bodies into batched model calls and their outputs into response bodies.

    `prepare` (in a worker thread) parses, checks and decodes a request; `submit` queues it for
    its batch; `respond` shapes the batch's answer for that request. `predict` does all three,
    for callers without an event loop.
    """

    def __init__(self, model, max_instances: int, max_image_pixels: int | None = None, *,
                 batch_max_size: int = 32, batch_timeout: float = 0.002):
        self.model = model
        shape = model.image_shape
        self.limits = Limits(max_instances, max_image_pixels or default_max_image_pixels(shape),
                             shape, max_example_bytes(shape))
        self._arrivals = batching.Arrivals()
        self._budget = batching.InstanceBudget(2 * max(max_instances, batch_max_size))
        self._batchers: dict[str, batching.Batcher] = {}
        self._batchers_lock = threading.Lock()
        self._batch_max_size = batch_max_size
        self._batch_timeout = batch_timeout

    @property
    def signature_names(self) -> list[str]:
        return sorted(self.model.signatures)

    def _batcher(self, queue: str) -> batching.Batcher:
        with self._batchers_lock:
            if queue not in self._batchers:
                self._batchers[queue] = batching.Batcher(
                    lambda payloads: self.model.run(queue, payloads),
                    max_size=self._batch_max_size, timeout=self._batch_timeout,
                    arrivals=self._arrivals, name=f"batch-{queue}")
            return self._batchers[queue]

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each instance count ran, over all queues."""
        total: dict[int, int] = {}
        for batcher in list(self._batchers.values()):
            for size, count in batcher.batch_sizes.items():
                total[size] = total.get(size, 0) + count
        return total

    def prepare(self, body: bytes) -> Prepared:
        with self._arrivals:
            request = parse_body(body)
            name = _signature_name(request)
            signature = self.model.signatures.get(name)
            if signature is None:
                raise BadRequest(f"unknown signature_name {name!r}; this model has "
                                 f"{self.signature_names}")
            rows = "instances" in request
            field = "instances" if rows else "inputs"
            max_instances = self.limits.max_instances
            arrays = (rows_to_arrays(request["instances"], signature, max_instances) if rows
                      else columns_to_arrays(request["inputs"], signature, max_instances))
            del request
            check_payloads(arrays, self.limits, field)
            count = len(next(iter(arrays.values())))
            self._budget.acquire(count)
            try:
                queue, payload = self.model.prepare(name, arrays, field)
            except runtime.PayloadError as err:
                self._budget.release(count)
                raise BadRequest(str(err)) from None
            except BaseException:
                self._budget.release(count)
                raise
            return Prepared(rows, count, queue, payload, signature.outputs)

    def submit(self, prepared: Prepared) -> Future:
        """The batch's answer for this request: its outputs, or the BadRequest it caused."""
        result: Future = Future()

        def done(batched: Future) -> None:
            self._budget.release(prepared.count)
            err = batched.exception()
            if isinstance(err, runtime.PayloadError):
                result.set_exception(BadRequest(str(err)))
            elif err is not None:
                result.set_exception(err)
            else:
                result.set_result(batched.result())

        self._batcher(prepared.queue).submit(prepared.count, prepared.payload) \
            .add_done_callback(done)
        return result

    @staticmethod
    def respond(prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> dict:
        values = {key: _jsonable(key, outputs[key]) for key in prepared.outputs}
        if not prepared.rows:
            return {"outputs": values[prepared.outputs[0]] if len(values) == 1 else values}
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        return {"predictions": [{key: value[i] for key, value in values.items()}
                                for i in range(prepared.count)]}

    def predict(self, body: bytes) -> dict:
        prepared = self.prepare(body)
        return self.respond(prepared, self.submit(prepared).result())

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()


def too_large(limit: int) -> str:
    """The 400 `error` of a request body over --max-request-bytes."""
    return f"request body is over {limit} bytes (--max-request-bytes)"


async def _read_body(request, limit: int) -> bytes:
    too_large_error = too_large(limit)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > _DRAIN_BYTES:
        raise BadRequest(too_large_error)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > _DRAIN_BYTES:
            break
    if size > limit:
        raise BadRequest(too_large_error)
    return b"".join(chunks)


def build_app(predictor: Predictor, *, model_name: str, predict_route: str, health_route: str,
              max_request_bytes: int, max_concurrent_predictions: int = 2):
    import asyncio

    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    # Bodies are read concurrently, but only this many are parsed and decoded at once; the
    # others wait their turn with nothing but their (capped) body in memory. Prepared requests
    # then wait for their batch without a thread.
    preparing = anyio.CapacityLimiter(max_concurrent_predictions)

    async def predict(request):
        if "name" in request.path_params and request.path_params["name"] != model_name:
            return JSONResponse({"error": f"model {request.path_params['name']!r} not found; "
                                          f"this server serves {model_name!r}"}, status_code=404)
        try:
            body = await _read_body(request, max_request_bytes)
            prepared = await anyio.to_thread.run_sync(predictor.prepare, body,
                                                      limiter=preparing)
            del body
            outputs = await asyncio.wrap_future(predictor.submit(prepared))
            return JSONResponse(predictor.respond(prepared, outputs))
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        except ClientDisconnect:  # nobody is left to answer; not the model's failure
            log.debug("a client disconnected before its request body arrived")
            return Response(status_code=400)
        except Exception as err:  # a failure inside the model: answer, log, keep serving
            log.exception("prediction failed")
            return JSONResponse({"error": f"internal error: {short_reason(err)}"},
                                status_code=500)

    async def health(request):
        return JSONResponse({"status": "ok", "signatures": predictor.signature_names})

    async def http_error(request, err):
        return JSONResponse({"error": f"{err.detail}: {request.method} {request.url.path}; "
                                      f"predictions go to POST {predict_route}"},
                            status_code=err.status_code)

    routes = [Route(health_route, health, methods=["GET"]),
              Route(predict_route, predict, methods=["POST"]),
              Route("/v1/models/{name}:predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def _route(text: str, flag: str) -> str:
    if not text.startswith("/"):
        raise TrainerError(f"{flag} must be a path starting with '/', got {text!r}")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (also from $AIP_HTTP_PORT), "
                                         f"got {text!r}")
    return int(text)


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    p = OneLineParser(prog="vertex-trainer serve", allow_abbrev=False,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=environ.get("AIP_STORAGE_URI"),
                   help="the SavedModel directory (local or gs://); falls back to $AIP_STORAGE_URI")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; the serving image passes 0.0.0.0")
    p.add_argument("--port", type=_port, default=environ.get("AIP_HTTP_PORT", "8080"),
                   help="falls back to $AIP_HTTP_PORT, then 8080; 0 picks a free port")
    p.add_argument("--health-route", default=environ.get("AIP_HEALTH_ROUTE", "/health"),
                   help="falls back to $AIP_HEALTH_ROUTE")
    p.add_argument("--predict-route", default=environ.get("AIP_PREDICT_ROUTE", "/predict"),
                   help="falls back to $AIP_PREDICT_ROUTE")
    p.add_argument("--model-name", default="model",
                   help="the <name> of TF Serving's /v1/models/<name>:predict")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="auto: LiteRT when the export converts (stored in it, or converted at "
                        "start where TensorFlow is installed), else TensorFlow; tensorflow for "
                        "GPUs")
    p.add_argument("--max-instances", type=int, default=256, help="per request")
    p.add_argument("--max-request-bytes", type=int, default=VERTEX_MAX_REQUEST_BYTES,
                   help="largest request body accepted")
    p.add_argument("--max-image-pixels", type=int,
                   help="largest width x height of an encoded image, read from its header "
                        f"before decoding; default {_IMAGE_PIXELS_PER_MODEL_PIXEL} x the model's "
                        f"input H x W, at most {_MAX_DEFAULT_IMAGE_PIXELS:,}")
    p.add_argument("--max-concurrent-predictions", type=int, default=2,
                   help="requests parsed and decoded at once; further requests wait their turn")
    p.add_argument("--batch-max-size", type=int, default=32,
                   help="instances of concurrent requests gathered into one model call")
    p.add_argument("--batch-timeout-ms", type=float, default=2.0,
                   help="how long a batch waits for requests still being parsed; a lone "
                        "request never waits")
    return p


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; connections made before the server runs wait in its backlog."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # An explicit IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections; without
        # it Nagle's algorithm holds each response body ~40 ms behind its headers.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        raise TrainerError(f"--host/--port: cannot listen on {host}:{port} "
                           f"({err.strerror or err})") from None
    return sock


def _has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _has_litert() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


def load_model(model_dir: str, choice: str, batch_max_size: int):
    """The model in the runtime `choice` asks for; for auto, LiteRT unless it cannot be had, with
    a one-line notice saying why."""
    tensorflow = _has_tensorflow()
    if choice != "tensorflow":
        reason = None
        if not _has_litert():
            reason = "the LiteRT runtime is not installed (pip install ai-edge-litert)"
        else:
            try:
                if not tensorflow and not files.exists(files.join(model_dir, "saved_model.pb")):
                    raise TrainerError(f"--model-dir: {model_dir} holds no saved_model.pb; "
                                       "expected a SavedModel directory written by "
                                       "trainer.task")
                return runtime.load_litert(model_dir, _class_names(model_dir), batch_max_size,
                                           convert=tensorflow)
            except litert.ConversionError as err:
                reason = f"LiteRT cannot serve it: {err}"
            except files.FileError as err:
                raise TrainerError(f"--model-dir: {err}") from None
        if choice == "litert" or not tensorflow:
            hint = "" if tensorflow else (
                "; this installation has no TensorFlow to convert it: run `python -m "
                "trainer.serving.litert EXPORT_DIR` where TensorFlow is installed (the training "
                "image has it), or serve it with a TensorFlow serving image")
            raise TrainerError(f"--runtime {choice}: {reason}{hint}")
        log.warning("serving with TensorFlow: %s", reason)
    from trainer import export

    return runtime.TensorFlowModel(export.load(model_dir, "--model-dir"))


def build_predictor(args: argparse.Namespace) -> Predictor:
    """The model of `args.model_dir` loaded, warmed and wrapped as serve's flags in `args` say."""
    model = load_model(args.model_dir, args.runtime, args.batch_max_size)
    model.warm_up()
    return Predictor(model, args.max_instances, args.max_image_pixels,
                     batch_max_size=args.batch_max_size, batch_timeout=args.batch_timeout_ms / 1000)


def _class_names(model_dir: str) -> list[str] | None:
    path = files.join(model_dir, LABELS_FILE)
    if not files.exists(path):
        return None
    return files.read(path).decode("utf-8").splitlines()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    return run_cli(lambda: _serve(argv, environ))


def _serve(argv: Sequence[str] | None, environ: Mapping[str, str]) -> None:
    started = time.monotonic()
    log_to_stdout()
    with usage_errors():
        args = build_parser(environ).parse_args(argv)
        if not args.model_dir:
            raise TrainerError("--model-dir is required (or set $AIP_STORAGE_URI)")
        for flag in ("max_instances", "max_request_bytes", "max_image_pixels",
                     "max_concurrent_predictions", "batch_max_size"):
            if getattr(args, flag) is not None and getattr(args, flag) <= 0:
                raise TrainerError(f"--{flag.replace('_', '-')} must be positive")
        if not 0 <= args.batch_timeout_ms <= 10_000:  # also refuses nan
            raise TrainerError("--batch-timeout-ms must be between 0 and 10000")
        routes = {flag: _route(getattr(args, flag.replace("-", "_")), f"--{flag}")
                  for flag in ("health-route", "predict-route")}
    import uvicorn

    predictor = build_predictor(args)
    sock = listen(args.host, args.port)
    app = build_app(predictor, model_name=args.model_name, predict_route=routes["predict-route"],
                    health_route=routes["health-route"],
                    max_request_bytes=args.max_request_bytes,
                    max_concurrent_predictions=args.max_concurrent_predictions)
    # A loaded TensorFlow model leaves ~350k long-lived objects that every full collection would
    # scan again (~150 ms, seen as p99 latency); frozen, collections only walk request garbage.
    gc.freeze()
    host, port = sock.getsockname()[:2]
    log.info("serving %s with %s (signatures %s; batches of up to %d instances) on "
             "http://%s:%d: POST %s, POST /v1/models/%s:predict, GET %s; images up to %s pixels; "
             "ready %.2f s after start", args.model_dir, predictor.model.runtime,
             ", ".join(predictor.signature_names), args.batch_max_size, host, port,
             routes["predict-route"], args.model_name, routes["health-route"],
             f"{predictor.limits.max_image_pixels:,}", time.monotonic() - started)
    # Uvicorn stops gracefully on SIGTERM, as Vertex sends it when it scales a node down.
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(
        sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
