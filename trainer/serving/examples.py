"""The `tf_example` signature's parsing without TensorFlow: serialized tf.train.Example -> image.

The Example messages are declared here from their .proto definition (tensorflow/core/example/
feature.proto, example.proto: proto3) and parsed by the protobuf runtime; what follows mirrors
trainer/export.py `_parse_examples`: `image` (uint8 bytes, HWC) or the classic `image_raw`
(uint8 or float32 bytes), optional `height`/`width`/`depth` that must match, and
tf.io.parse_example's rules for each feature (one value, the right kind; absent or empty:
the default). Errors read as TensorFlow's do, so a client sees the same 400 from either runtime.
"""

from __future__ import annotations

import functools

import numpy as np

from trainer import records

_KINDS = {"bytes_list": "string", "float_list": "float", "int64_list": "int64"}
_SCALE = np.float32(1.0 / 255.0)


class ExampleError(ValueError):
    """A record that the export's tf_example signature would refuse; one line."""


@functools.lru_cache(maxsize=None)
def _example_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="vertex_trainer_example.proto",
                                               package="vertex_trainer", syntax="proto3")

    def add(msg, name, number, kind, label=field.LABEL_OPTIONAL, type_name=None, oneof=None):
        added = msg.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            added.type_name = f".vertex_trainer.{type_name}"
        if oneof is not None:
            added.oneof_index = oneof
        return added

    for name, kind in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                       ("Int64List", field.TYPE_INT64)):
        msg = proto.message_type.add(name=name)
        add(msg, "value", 1, kind, field.LABEL_REPEATED)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate((("bytes_list", "BytesList"),
                                                ("float_list", "FloatList"),
                                                ("int64_list", "Int64List")), start=1):
        add(feature, name, number, field.TYPE_MESSAGE, type_name=type_name, oneof=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    add(entry, "key", 1, field.TYPE_STRING)
    add(entry, "value", 2, field.TYPE_MESSAGE, type_name="Feature")
    add(features, "feature", 1, field.TYPE_MESSAGE, field.LABEL_REPEATED,
        type_name="Features.FeatureEntry")
    example = proto.message_type.add(name="Example")
    add(example, "features", 1, field.TYPE_MESSAGE, type_name="Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("vertex_trainer.Example"))


def _value(features, key: str, kind: str, index: int, default):
    """The feature's single value, or `default` when absent (tf.io.FixedLenFeature([]))."""
    if key not in features:
        return default
    feature = features[key]
    found = feature.WhichOneof("kind")
    if found is None:
        return default
    if found != kind:
        raise ExampleError(f"Key: {key}, Index: {index}. Data types don't match. Data type: "
                           f"{_KINDS[found]} but expected type: {_KINDS[kind]}")
    values = getattr(feature, found).value
    if len(values) != 1:
        raise ExampleError(f"Key: {key}, Index: {index}. Number of {_KINDS[kind]} values != "
                           f"expected. Values size: {len(values)} but output shape: []")
    return values[0]


def parse(serialized: list[bytes], image_shape: tuple[int, int, int]) -> np.ndarray:
    """float32 [N, H, W, C] in [0, 1] of serialized Examples, as the tf_example signature."""
    from google.protobuf.message import DecodeError

    example_class = _example_class()
    height, width, channels = image_shape
    pixels = height * width * channels
    shape_text = f"{height}x{width}x{channels}"
    parsed = []
    for index, data in enumerate(serialized):
        example = example_class()
        try:
            example.ParseFromString(data)
        except DecodeError:
            raise ExampleError(f"Could not parse example input (record {index})") from None
        features = example.features.feature
        image = _value(features, records.IMAGE, "bytes_list", index, b"")
        legacy = _value(features, records.LEGACY_IMAGE, "bytes_list", index, b"")
        declared = tuple(_value(features, key, "int64_list", index, dim)
                         for key, dim in zip(records.SHAPE_KEYS, image_shape))
        parsed.append((image, legacy, declared))
    for image, legacy, _ in parsed:
        sized = len(image) == pixels if image else len(legacy) in (pixels, 4 * pixels)
        if not sized:
            raise ExampleError(
                f"example_bytes: a record holds an image of the wrong size; expected feature "
                f"{records.IMAGE} of {pixels} uint8 bytes, or {records.LEGACY_IMAGE} of {pixels} "
                f"uint8 or {4 * pixels} float32 bytes, for {shape_text}")
    if any(declared != tuple(image_shape) for _, _, declared in parsed):
        raise ExampleError(f"example_bytes: a record declares height/width/depth other than "
                           f"{shape_text}")
    batch = np.empty((len(parsed), *image_shape), np.float32)
    for out, (image, legacy, _) in zip(batch, parsed):
        data = image or legacy
        if len(data) == pixels:
            out[...] = np.frombuffer(data, np.uint8).reshape(image_shape).astype(np.float32) \
                * _SCALE
        else:
            out[...] = np.frombuffer(data, "<f4").reshape(image_shape)
    return batch
