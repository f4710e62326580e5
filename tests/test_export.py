"""Every export signature reproduces the Keras model; label maps; bad inputs fail clearly."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tests.exports import (DIGITS, classic_example, current_example, expected, export_model,
                           images, jpeg, png, scaled)
from trainer import export, models
from trainer.serving import litert
from trainer.errors import TrainerError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, path = export_model(tmp_path_factory.mktemp("export") / "model", class_names=DIGITS)
    return model, tf.saved_model.load(path), path


def check(outputs, probabilities, atol=1e-6):
    np.testing.assert_allclose(outputs["probabilities"].numpy(), probabilities, atol=atol)
    classes = probabilities.argmax(axis=1)
    np.testing.assert_array_equal(outputs["classes"].numpy(), classes)
    assert [label.decode() for label in outputs["labels"].numpy()] == [DIGITS[c] for c in classes]


def test_signatures_and_their_inputs(exported):
    _, loaded, _ = exported
    assert set(loaded.signatures) == set(litert.SIGNATURE_INPUTS)
    for name, input_name in litert.SIGNATURE_INPUTS.items():
        signature = loaded.signatures[name]
        assert list(signature.structured_input_signature[1]) == [input_name]
        assert set(signature.structured_outputs) == {"probabilities", "classes", "labels"}


def test_float_png_jpeg_and_example_signatures_reproduce_the_model(exported):
    model, loaded, _ = exported
    pixels = images(6)
    want = expected(model, pixels)
    check(loaded.signatures["serving_default"](image=tf.constant(scaled(pixels))), want)
    check(loaded.signatures["encoded_image"](
        image_bytes=tf.constant([png(image) for image in pixels])), want)
    records = [current_example(pixels[0]), current_example(pixels[1], shape_fields=False),
               classic_example(pixels[2]), classic_example(pixels[3], dtype=np.uint8),
               current_example(pixels[4]), classic_example(pixels[5])]
    check(loaded.signatures["tf_example"](example_bytes=tf.constant(records)), want)
    # JPEG is lossy: the model sees what the JPEG decodes to.
    jpegs = [jpeg(image) for image in pixels]
    decoded = np.stack([tf.io.decode_jpeg(data).numpy() for data in jpegs])
    check(loaded.signatures["encoded_image"](image_bytes=tf.constant(jpegs)),
          expected(model, decoded))


def test_encoded_images_are_converted_to_the_model_channels_and_resized(exported):
    model, loaded, _ = exported
    pixels = images(2)
    colour = png(np.repeat(pixels[0], 3, axis=2))  # grey stored as RGB converts back exactly
    large = np.repeat(np.repeat(pixels[1], 2, axis=0), 2, axis=1)
    outputs = loaded.signatures["encoded_image"](image_bytes=tf.constant([colour, png(large)]))
    resized = tf.image.resize(scaled(large), (28, 28), antialias=True).numpy()
    want = tf.nn.softmax(model(np.stack([scaled(pixels[0]), resized]), training=False)).numpy()
    check(outputs, want)


@pytest.mark.parametrize("signature, value, message", [
    ("encoded_image", b"not an image", "Unknown image file format"),
    ("tf_example", b"\x08garbage", "Could not parse example input"),
    ("tf_example", current_example(np.zeros((28, 27, 1), np.uint8)),
     "example_bytes: a record holds an image of the wrong size; expected feature image of 784 "
     "uint8 bytes, or image_raw of 784 uint8 or 3136 float32 bytes, for 28x28x1"),
    ("tf_example", current_example(np.zeros((14, 56, 1), np.uint8)),
     "example_bytes: a record declares height/width/depth other than 28x28x1"),
], ids=["not-an-image", "not-an-example", "wrong-size", "wrong-declared-shape"])
def test_bad_signature_inputs_fail_with_a_message(exported, signature, value, message):
    _, loaded, _ = exported
    input_name = litert.SIGNATURE_INPUTS[signature]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        loaded.signatures[signature](**{input_name: tf.constant([value])})


def test_the_label_map_travels_with_the_export(exported, tmp_path):
    _, _, path = exported
    assert export.class_names_of(path) == DIGITS
    _, unlabelled = export_model(tmp_path / "plain")
    assert export.class_names_of(unlabelled) is None
    outputs = tf.saved_model.load(unlabelled).signatures["serving_default"].structured_outputs
    assert set(outputs) == {"probabilities", "classes"}


def test_read_label_map(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\r\n dog \nbird\n")
    assert export.read_label_map(str(path), 3) == ["cat", "dog", "bird"]


@pytest.mark.parametrize("text, message", [
    ("a\nb\n", "has 2 labels; expected 3 (--num-classes), one per line"),
    ("a\n\nb\n", "line 2 is empty; expected one label per line"),
    ("a\nb\na\n", "repeats the label(s) a"),
    (None, "cannot read"),
])
def test_bad_label_maps_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TrainerError, match=re.escape(message)) as err:
        export.read_label_map(str(path), 3)
    assert str(err.value).startswith("--label-map: ") and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_loading_a_directory_without_a_saved_model_names_the_flag(tmp_path):
    with pytest.raises(TrainerError, match=f"--model-dir: {tmp_path} holds no saved_model.pb"):
        export.load(str(tmp_path), "--model-dir")


def test_exporter_writes_the_tutorial_cnn_with_labels(tmp_path):
    model = models.build_model("cnn", (28, 28, 1), 10, 0.4)
    local = models.build_model("cnn", (28, 28, 1), 10, 0.4)
    exporter = export.Exporter(model, local, export_dir=str(tmp_path), timestamped=True,
                               image_shape=(28, 28, 1), class_names=DIGITS)
    assert exporter.export(step=1) == exporter.last_export
    assert exporter.seconds > 0
    assert export.class_names_of(exporter.last_export) == DIGITS
    pixels = images(3)
    outputs = tf.saved_model.load(exporter.last_export).signatures["serving_default"](
        image=tf.constant(scaled(pixels)))
    check(outputs, expected(model, pixels), atol=1e-5)


def test_exporter_writes_each_step_and_weights_once(tmp_path):
    model = models.build_model("dnn", (28, 28, 1), 10, 0.0)
    exporter = export.Exporter(model, models.build_model("dnn", (28, 28, 1), 10, 0.0),
                               export_dir=str(tmp_path), timestamped=True,
                               image_shape=(28, 28, 1))
    first = exporter.export(step=5)
    assert exporter.export(step=5) == first == exporter.last_export
    other_step = exporter.export(step=6)
    model.set_weights([w + 1 for w in model.get_weights()])
    other_weights = exporter.export(step=6)
    assert len({first, other_step, other_weights}) == 3
    assert sorted(str(p) for p in tmp_path.iterdir()) == sorted([first, other_step,
                                                                 other_weights])
