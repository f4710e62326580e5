"""A trainer export's model as LiteRT (TensorFlow Lite with XNNPACK), for the slim server.

`convert` (needs TensorFlow) turns the SavedModel's `serving_default` into a LiteRT flatbuffer
that maps float32 images [N, H, W, C] to `probabilities`; the server computes `classes` and
`labels` from them and does the other signatures' parsing itself (trainer/serving/images.py,
examples.py), so one converted model serves all three. `write_beside` stores it in the export,
`<export>/litert/model.tflite`, with `source.json` naming the SavedModel files it came from
(sha256), so a stale conversion is never served:

    python -m trainer.serving.litert EXPORT_DIR

`load` (no TensorFlow) reads it back. LiteRT runs the trainer's models with builtin ops only;
an export that needs more is refused with `ConversionError`, and the server falls back to
TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import sys

from trainer.errors import TrainerError
from trainer.serving import files

DIRECTORY = "litert"
MODEL_FILE = f"{DIRECTORY}/model.tflite"
SOURCE_FILE = f"{DIRECTORY}/source.json"
# The files that define the SavedModel's graph and weights; their digests tie a conversion to it.
SOURCES = ("saved_model.pb", "variables/variables.index")
# What trainer/export.py writes: a model of any other shape is not one this server can split.
SIGNATURE_INPUTS = {"serving_default": "image", "encoded_image": "image_bytes",
                    "tf_example": "example_bytes"}


class ConversionError(Exception):
    """The export cannot be served by LiteRT; the message says why, in one line."""


def source_digests(model_dir: str) -> dict[str, str]:
    return {name: hashlib.sha256(files.read(files.join(model_dir, name))).hexdigest()
            for name in SOURCES}


def image_shape_of(loaded) -> tuple[int, int, int]:
    """H x W x C of a trainer export's float input; ConversionError for any other SavedModel."""
    inputs = {name: sorted(function.structured_input_signature[1])
              for name, function in loaded.signatures.items()}
    if inputs != {name: [key] for name, key in SIGNATURE_INPUTS.items()}:
        raise ConversionError(f"its signatures {inputs} are not trainer.export's")
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["image"]
    shape = spec.shape.as_list()
    if len(shape) != 4 or not all(shape[1:]) or spec.dtype.name != "float32":
        raise ConversionError(f"its image input is {spec.dtype.name} {shape}, not float32 "
                              "[N, H, W, C]")
    return tuple(shape[1:])


def convert(loaded) -> bytes:
    """The LiteRT flatbuffer of a loaded trainer export's `serving_default` probabilities."""
    import tensorflow as tf

    shape = image_shape_of(loaded)
    serving = loaded.signatures["serving_default"]

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="image")])
    def probabilities(image):
        return {"probabilities": serving(image=image)["probabilities"]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [probabilities.get_concrete_function()], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as err:  # the converter raises ConverterError, ValueError, RuntimeError...
        reason = " ".join(str(err).split())[:300]
        raise ConversionError(f"the LiteRT converter refused it ({reason})") from None


def write_beside(model_dir: str) -> str:
    """Converts the export at `model_dir` and stores the result in it; returns the model path."""
    from trainer import export

    loaded = export.load(model_dir, "EXPORT_DIR")
    flatbuffer = convert(loaded)
    import tensorflow as tf

    tf.io.gfile.makedirs(files.join(model_dir, DIRECTORY))
    source = json.dumps({"sources": source_digests(model_dir)}, indent=1)
    for name, data in ((MODEL_FILE, flatbuffer), (SOURCE_FILE, source.encode())):
        with tf.io.gfile.GFile(files.join(model_dir, name), "wb") as f:
            f.write(data)
    return files.join(model_dir, MODEL_FILE)


def stored(model_dir: str) -> bytes | None:
    """The conversion stored in the export, if there is one made from this very SavedModel."""
    if not files.exists(files.join(model_dir, SOURCE_FILE)):
        return None
    try:
        recorded = json.loads(files.read(files.join(model_dir, SOURCE_FILE)))["sources"]
    except (ValueError, KeyError, TypeError):
        return None
    if recorded != source_digests(model_dir):
        return None
    return files.read(files.join(model_dir, MODEL_FILE))


def main(argv=None) -> int:
    from trainer.cli import OneLineParser, run_cli

    def body():
        p = OneLineParser(prog="python -m trainer.serving.litert",
                          description="Convert a trainer export to LiteRT and store it in the "
                                      "export (litert/), for the slim serving image.")
        p.add_argument("model_dir", metavar="EXPORT_DIR")
        model_dir = p.parse_args(argv).model_dir
        try:
            print(write_beside(model_dir))
        except ConversionError as err:
            raise TrainerError(f"EXPORT_DIR: {model_dir} cannot be served by LiteRT: "
                               f"{err}") from None

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
