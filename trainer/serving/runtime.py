"""What runs the model behind the server: LiteRT (no TensorFlow) or the SavedModel in TensorFlow.

Both offer the export's three signatures with the same inputs and outputs, in two steps:
`prepare(signature, arrays)` turns one request's checked arrays into a payload (LiteRT: decodes
images and parses examples here, per request, into float32 [n, H, W, C]; TensorFlow: the arrays
as they are) and names the batch queue it joins; `run(queue, payloads)` computes one batch and
returns one result per payload. LiteRT's payloads of every signature share one queue (they are
all images by then); TensorFlow's queue per signature, and a batch that fails is run again one
request at a time so the error lands on the request that caused it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from trainer.serving import examples, images, litert

DEFAULT_SIGNATURE = "serving_default"
IMAGE_BYTES, EXAMPLE_BYTES = "image_bytes", "example_bytes"


class PayloadError(ValueError):
    """One request's inputs that the signature refuses; the message is its one-line 400."""


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
    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _split(outputs: Mapping[str, np.ndarray], counts: Sequence[int]) -> list[dict]:
    bounds = np.cumsum(counts)[:-1]
    pieces = {key: np.split(value, bounds) for key, value in outputs.items()}
    return [{key: pieces[key][i] for key in outputs} for i in range(len(counts))]


_DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def _quiet_delegate():
    """LiteRT's C++ announces its default delegate on descriptor 2, once a process, before the
    server's first log line: a notice with no news in it (the runtime is in that log line)."""
    from trainer import tf_start

    return tf_start.filtered_stderr(lambda line: line.rstrip("\n") == _DELEGATE_NOTICE)


class LiteRtModel:
    """A converted trainer export in LiteRT's interpreter with XNNPACK.

    Batches are padded to a few fixed sizes (1, 4, 16, ... up to `max_batch`), each with its own
    interpreter: resizing one interpreter costs ~3 ms, more than a small model's whole call.
    """

    runtime = "LiteRT"

    def __init__(self, flatbuffer: bytes, class_names: list[str] | None, max_batch: int):
        from ai_edge_litert.interpreter import Interpreter

        self._flatbuffer = flatbuffer
        self._interpreter_class = Interpreter
        self._interpreters: dict[int, object] = {}
        with _quiet_delegate():
            probe = Interpreter(model_content=flatbuffer)
        details = probe.get_input_details()[0]
        self.image_shape = tuple(int(d) for d in details["shape_signature"][1:])
        self._labels = np.array([name.encode() for name in class_names], object) \
            if class_names else None
        self._sizes = sorted({min(4 ** i, max_batch) for i in range(16) if 4 ** i < max_batch}
                             | {max_batch})
        outputs = ("classes", "probabilities") + (("labels",) if class_names else ())
        specs = {DEFAULT_SIGNATURE: ("image", InputSpec(np.dtype("float32"),
                                                        (None, *self.image_shape))),
                 "encoded_image": (IMAGE_BYTES, InputSpec(None, (None,))),
                 "tf_example": (EXAMPLE_BYTES, InputSpec(None, (None,)))}
        self.signatures = {name: Signature(name, {key: spec}, outputs)
                           for name, (key, spec) in specs.items()}

    def _interpreter(self, size: int):
        interpreter = self._interpreters.get(size)
        if interpreter is None:
            with _quiet_delegate():
                interpreter = self._interpreter_class(model_content=self._flatbuffer,
                                                      num_threads=_threads())
                index = interpreter.get_input_details()[0]["index"]
                interpreter.resize_tensor_input(index, [size, *self.image_shape])
                interpreter.allocate_tensors()
            self._interpreters[size] = interpreter
        return interpreter

    def warm_up(self) -> None:
        for size in self._sizes:
            self._invoke(np.zeros((size, *self.image_shape), np.float32))

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        size = next((s for s in self._sizes if s >= len(batch)), self._sizes[-1])
        interpreter = self._interpreter(size)
        inputs = interpreter.get_input_details()[0]["index"]
        output = interpreter.get_output_details()[0]["index"]
        results = []
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            if len(chunk) < size:
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]),
                                                        np.float32)])
            interpreter.set_tensor(inputs, chunk)
            interpreter.invoke()
            results.append(interpreter.get_tensor(output)[:len(batch) - start])
        return np.concatenate(results)

    def prepare(self, signature: str, arrays: Mapping[str, np.ndarray], field: str):
        if signature == DEFAULT_SIGNATURE:
            return "model", np.ascontiguousarray(arrays["image"], np.float32)
        if signature == "tf_example":
            try:
                return "model", examples.parse(list(arrays[EXAMPLE_BYTES].flat),
                                               self.image_shape)
            except examples.ExampleError as err:
                raise PayloadError(f"tf_example: {err}") from None
        encoded = arrays[IMAGE_BYTES]
        batch = np.empty((len(encoded), *self.image_shape), np.float32)
        for index, data in enumerate(encoded.flat):
            try:
                batch[index] = images.eval_image(data, self.image_shape)
            except images.ImageError as err:
                raise PayloadError(f"{field}[{index}].{IMAGE_BYTES}: {err}") from None
        return "model", batch

    def run(self, queue: str, payloads: Sequence[np.ndarray]) -> list[dict]:
        probabilities = self._invoke(np.concatenate(payloads))
        classes = probabilities.argmax(axis=1).astype(np.int64)
        outputs = {"probabilities": probabilities, "classes": classes}
        if self._labels is not None:
            outputs["labels"] = self._labels[classes]
        return _split(outputs, [len(p) for p in payloads])


class TensorFlowModel:
    """The SavedModel's own signature functions (GPU serving, exports LiteRT cannot take)."""

    runtime = "TensorFlow"

    def __init__(self, loaded):
        self._functions = dict(loaded.signatures.items())
        self.signatures = {}
        for name, function in self._functions.items():
            inputs = {key: InputSpec(None if spec.dtype.name == "string" else
                                     np.dtype(spec.dtype.as_numpy_dtype),
                                     tuple(spec.shape.as_list()))
                      for key, spec in function.structured_input_signature[1].items()}
            self.signatures[name] = Signature(name, inputs,
                                              tuple(sorted(function.structured_outputs)))
        serving = self.signatures.get(DEFAULT_SIGNATURE)
        specs = list(serving.inputs.values()) if serving else []
        self.image_shape = tuple(specs[0].shape[1:]) if (
            len(specs) == 1 and specs[0].dtype is not None and len(specs[0].shape) == 4
            and all(specs[0].shape[1:])) else None

    def warm_up(self) -> None:
        import tensorflow as tf

        if self.image_shape is not None:
            self._functions[DEFAULT_SIGNATURE](**{
                next(iter(self.signatures[DEFAULT_SIGNATURE].inputs)):
                    tf.zeros([1, *self.image_shape])})

    def prepare(self, signature: str, arrays: Mapping[str, np.ndarray], field: str):
        return signature, dict(arrays)

    def _call(self, signature: str, arrays: Mapping[str, np.ndarray]) -> dict:
        import tensorflow as tf

        outputs = self._functions[signature](**{key: tf.constant(value)
                                                for key, value in arrays.items()})
        return {key: outputs[key].numpy() for key in self.signatures[signature].outputs}

    def run(self, queue: str, payloads: Sequence[Mapping[str, np.ndarray]]) -> list:
        import tensorflow as tf

        joined = {key: np.concatenate([p[key] for p in payloads]) for key in payloads[0]}
        try:
            return _split(self._call(queue, joined),
                          [len(next(iter(p.values()))) for p in payloads])
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as err:
            if len(payloads) == 1:
                return [PayloadError(f"{queue}: {op_error(err)}")]
        return [result for payload in payloads for result in self.run(queue, [payload])]


def op_error(err: BaseException, limit: int = 300) -> str:
    import re

    from trainer.errors import short_reason

    if isinstance(err, UnicodeDecodeError):
        # TensorFlow echoed the client's bytes into its message, which then failed to decode
        # on the way to Python: decode it leniently instead.
        err = ValueError(err.object.decode("utf-8", "replace"))
    message = getattr(err, "message", None) or str(err)
    found = re.search(r"assertion failed: \[(.*?)\]", message)
    reason = found.group(1) if found else short_reason(err)
    return reason if len(reason) <= limit else reason[:limit] + "..."


def load_litert(model_dir: str, class_names: list[str] | None, max_batch: int,
                convert: bool) -> LiteRtModel:
    """The export's stored LiteRT model, or (with `convert`, TensorFlow needed) one converted
    now; litert.ConversionError when neither is possible."""
    flatbuffer = litert.stored(model_dir)
    if flatbuffer is None:
        if not convert:
            raise litert.ConversionError(f"{model_dir} holds no {litert.MODEL_FILE} made from "
                                         "its SavedModel")
        from trainer import export

        flatbuffer = litert.convert(export.load(model_dir, "--model-dir"))
    return LiteRtModel(flatbuffer, class_names, max_batch)
