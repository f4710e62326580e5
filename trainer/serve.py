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
booleans, bad b64, more than --max-instances instances, a body over --max-request-bytes, an
image whose header declares more than --max-image-pixels or is not PNG/JPEG/GIF/BMP, a
serialized example larger than the model's largest valid record) gets HTTP 400
`{"error": "<one line>"}`; the server keeps serving.

Cost bounds: the request body is capped before it is buffered; encoded images are measured from
their headers (trainer/image_header.py) before TensorFlow decodes anything, so a few hundred
bytes declaring 16000 x 16000 pixels cost nothing; predictions run at most
--max-concurrent-predictions at a time, so peak memory is bounded by that many worst-case
requests (README, "Serve predictions", states the measured figure).

Starlette on Uvicorn: a maintained, small ASGI stack (anyio, h11) with explicit routing and
streaming request bodies (so the size cap holds before a body is buffered); model calls run in
Starlette's thread pool, so health checks answer while a prediction runs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import logging
import os
import re
import socket
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from trainer import image_header
from trainer.cli import OneLineParser, run_cli, usage_errors
from trainer.errors import TrainerError, short_reason
from trainer.logs import log_to_stdout

log = logging.getLogger("trainer.serve")

DEFAULT_SIGNATURE = "serving_default"
VERTEX_MAX_REQUEST_BYTES = 1_500_000  # shared public endpoints' cap
_DRAIN_BYTES = 64 << 20  # over-size bodies up to this are read, so the client gets its 400
_MAX_ERROR_CHARS = 300
_REQUEST_FIELDS = ("instances", "inputs", "signature_name", "parameters")
# The byte inputs of trainer.export's signatures (export.SIGNATURE_INPUTS): checked before
# TensorFlow sees them.
IMAGE_BYTES, EXAMPLE_BYTES = "image_bytes", "example_bytes"
_IMAGE_PIXELS_PER_MODEL_PIXEL = 4096
_MAX_DEFAULT_IMAGE_PIXELS = 1 << 24
_EXAMPLE_OVERHEAD_BYTES = 1024  # label, height/width/depth and the proto framing of a record


class BadRequest(Exception):
    """A client error; the message is the one-line `error` of the 400 response."""


@dataclass(frozen=True)
class InputSpec:
    dtype: np.dtype | None  # None: strings (bytes)
    shape: tuple[int | None, ...]  # including the batch dimension

    def describe(self, batched: bool) -> str:
        shape = self.shape if batched else self.shape[1:]
        if self.dtype is None and not shape:
            return 'a string or {"b64": "..."}'
        dims = ", ".join("N" if batched and i == 0 else "?" if d is None else str(d)
                         for i, d in enumerate(shape))
        return f"{'string' if self.dtype is None else self.dtype.name} of shape [{dims}]"


@dataclass(frozen=True)
class Signature:
    name: str
    function: object  # the SavedModel's concrete function
    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]


def signatures_of(loaded) -> dict[str, Signature]:
    result = {}
    for name, function in loaded.signatures.items():
        inputs = {key: InputSpec(None if spec.dtype.name == "string" else
                                 np.dtype(spec.dtype.as_numpy_dtype),
                                 tuple(spec.shape.as_list()))
                  for key, spec in function.structured_input_signature[1].items()}
        result[name] = Signature(name, function, inputs, tuple(sorted(function.structured_outputs)))
    return result


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


def parse_body(body: bytes):
    try:
        request = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("request body nests too deeply") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
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
    # NumPy would read true/false as 1/0. Only a body holding the words can hold a boolean, so
    # ordinary requests skip the walk.
    if b"true" in body or b"false" in body:
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


_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]")


def _op_error(err: BaseException) -> str:
    if isinstance(err, UnicodeDecodeError):
        # TensorFlow echoed the client's bytes into its message, which then failed to decode
        # on the way to Python: decode it leniently instead.
        err = ValueError(err.object.decode("utf-8", "replace"))
    message = getattr(err, "message", None) or str(err)
    found = _ASSERTION.search(message)
    reason = found.group(1) if found else short_reason(err)
    return reason if len(reason) <= _MAX_ERROR_CHARS else reason[:_MAX_ERROR_CHARS] + "..."


@dataclass(frozen=True)
class Limits:
    """What one request may ask the model to decode."""

    max_instances: int
    max_image_pixels: int
    max_example_bytes: int | None  # None: the model has no float image input to size it by


def model_image_shape(signatures: Mapping[str, Signature]) -> tuple[int, ...] | None:
    """H x W x C of the model's float image input (trainer.export's serving_default)."""
    signature = signatures.get(DEFAULT_SIGNATURE)
    specs = list(signature.inputs.values()) if signature else []
    if len(specs) == 1 and specs[0].dtype is not None and len(specs[0].shape) == 4 and \
            all(specs[0].shape[1:]):
        return specs[0].shape[1:]
    return None


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


def _check_image(data: bytes, where: str, limit: int) -> None:
    try:
        count = image_header.pixels(data)
    except image_header.HeaderError as err:
        raise BadRequest(f"{where}: cannot read the image's size ({err}); expected a "
                         f"{image_header.FORMATS} image") from None
    if count > limit:
        raise BadRequest(f"{where}: the image declares {count:,} pixels; at most {limit:,} are "
                         "accepted (--max-image-pixels)")


def _check_example(data: bytes, where: str, limit: int) -> None:
    if len(data) > limit:
        raise BadRequest(f"{where}: a serialized example of {len(data):,} bytes; this model's "
                         f"records take at most {limit:,}")


def check_payloads(arrays: Mapping[str, np.ndarray], limits: Limits, field: str) -> None:
    """Refuses byte inputs that would cost more to decode than this model's limits allow."""
    checks = {IMAGE_BYTES: (_check_image, limits.max_image_pixels),
              EXAMPLE_BYTES: (_check_example, limits.max_example_bytes)}
    for name, array in arrays.items():
        check, limit = checks.get(name, (None, None))
        if check is None or limit is None or array.dtype != object:
            continue
        for index, data in enumerate(array.flat):
            check(data, f"{field}[{index}].{name}", limit)


class Predictor:
    """Turns request bodies into signature calls and their outputs into response bodies."""

    def __init__(self, loaded, max_instances: int, max_image_pixels: int | None = None):
        self._signatures = signatures_of(loaded)
        shape = model_image_shape(self._signatures)
        self.limits = Limits(max_instances, max_image_pixels or default_max_image_pixels(shape),
                             max_example_bytes(shape))

    @property
    def signature_names(self) -> list[str]:
        return sorted(self._signatures)

    def predict(self, body: bytes) -> dict:
        import tensorflow as tf

        request = parse_body(body)
        name = _signature_name(request)
        signature = self._signatures.get(name)
        if signature is None:
            raise BadRequest(f"unknown signature_name {name!r}; this model has "
                             f"{self.signature_names}")
        rows = "instances" in request
        max_instances = self.limits.max_instances
        arrays = (rows_to_arrays(request["instances"], signature, max_instances) if rows
                  else columns_to_arrays(request["inputs"], signature, max_instances))
        check_payloads(arrays, self.limits, "instances" if rows else "inputs")
        try:
            outputs = signature.function(**{key: tf.constant(value)
                                            for key, value in arrays.items()})
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as err:
            raise BadRequest(f"{name}: {_op_error(err)}") from None
        values = {key: _jsonable(key, outputs[key].numpy()) for key in signature.outputs}
        if not rows:
            return {"outputs": values[signature.outputs[0]] if len(values) == 1 else values}
        count = len(next(iter(arrays.values())))
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        return {"predictions": [{key: value[i] for key, value in values.items()}
                                for i in range(count)]}


async def _read_body(request, limit: int) -> bytes:
    too_large = f"request body is over {limit} bytes (--max-request-bytes)"
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > _DRAIN_BYTES:
        raise BadRequest(too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > _DRAIN_BYTES:
            break
    if size > limit:
        raise BadRequest(too_large)
    return b"".join(chunks)


def build_app(predictor: Predictor, *, model_name: str, predict_route: str, health_route: str,
              max_request_bytes: int, max_concurrent_predictions: int = 2):
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    # Bodies are read concurrently, but only this many predictions hold decoded tensors at once;
    # the others wait their turn with nothing but their (capped) body in memory.
    predicting = anyio.CapacityLimiter(max_concurrent_predictions)

    async def predict(request):
        if "name" in request.path_params and request.path_params["name"] != model_name:
            return JSONResponse({"error": f"model {request.path_params['name']!r} not found; "
                                          f"this server serves {model_name!r}"}, status_code=404)
        try:
            body = await _read_body(request, max_request_bytes)
            return JSONResponse(await anyio.to_thread.run_sync(predictor.predict, body,
                                                               limiter=predicting))
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
    p.add_argument("--max-instances", type=int, default=256, help="per request")
    p.add_argument("--max-request-bytes", type=int, default=VERTEX_MAX_REQUEST_BYTES,
                   help="largest request body accepted")
    p.add_argument("--max-image-pixels", type=int,
                   help="largest width x height of an encoded image, read from its header "
                        f"before decoding; default {_IMAGE_PIXELS_PER_MODEL_PIXEL} x the model's "
                        f"input H x W, at most {_MAX_DEFAULT_IMAGE_PIXELS:,}")
    p.add_argument("--max-concurrent-predictions", type=int, default=2,
                   help="predictions computed at once; further requests wait their turn")
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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    return run_cli(lambda: _serve(argv, environ))


def _serve(argv: Sequence[str] | None, environ: Mapping[str, str]) -> None:
    log_to_stdout()
    with usage_errors():
        args = build_parser(environ).parse_args(argv)
        if not args.model_dir:
            raise TrainerError("--model-dir is required (or set $AIP_STORAGE_URI)")
        for flag in ("max_instances", "max_request_bytes", "max_image_pixels",
                     "max_concurrent_predictions"):
            if getattr(args, flag) is not None and getattr(args, flag) <= 0:
                raise TrainerError(f"--{flag.replace('_', '-')} must be positive")
        routes = {flag: _route(getattr(args, flag.replace("-", "_")), f"--{flag}")
                  for flag in ("health-route", "predict-route")}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import uvicorn

    from trainer import export

    predictor = Predictor(export.load(args.model_dir, "--model-dir"), args.max_instances,
                          args.max_image_pixels)
    sock = listen(args.host, args.port)
    app = build_app(predictor, model_name=args.model_name, predict_route=routes["predict-route"],
                    health_route=routes["health-route"],
                    max_request_bytes=args.max_request_bytes,
                    max_concurrent_predictions=args.max_concurrent_predictions)
    # The loaded model leaves ~350k long-lived objects that every full collection would scan
    # again (~150 ms, seen as p99 latency); frozen, collections only walk request garbage.
    gc.freeze()
    host, port = sock.getsockname()[:2]
    log.info("serving %s (signatures %s) on http://%s:%d: POST %s, POST /v1/models/%s:predict, "
             "GET %s; images up to %s pixels", args.model_dir,
             ", ".join(predictor.signature_names), host, port, routes["predict-route"],
             args.model_name, routes["health-route"], f"{predictor.limits.max_image_pixels:,}")
    # Uvicorn stops gracefully on SIGTERM, as Vertex sends it when it scales a node down.
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(
        sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
