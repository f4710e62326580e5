"""Exported models and request inputs shared by the export, serving and predict tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.conftest import example, synthetic_images
from trainer import export, models
from trainer.records import serialize_example

DIGITS = [f"digit-{i}" for i in range(10)]


def export_model(path, name: str = "cnn_small", shape=(28, 28, 1), num_classes: int = 10,
                 class_names=None, seed: int = 0):
    """(the Keras model, its export path): untrained weights, which the export must reproduce."""
    import keras

    keras.utils.set_random_seed(seed)
    model = models.build_model(name, shape, num_classes, models.MODELS[name].dropout)
    export.write_saved_model(model, str(path), shape, class_names)
    return model, str(path)


def images(count: int, shape=(28, 28, 1), seed: int = 0) -> np.ndarray:
    """uint8 images; for the 28x28x1 default, the learnable squares of the training tests."""
    if tuple(shape) == (28, 28, 1):
        return synthetic_images(count, seed)[0]
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def scaled(uint8_images: np.ndarray) -> np.ndarray:
    """What the training pipeline feeds the model for these pixels."""
    return uint8_images.astype(np.float32) * np.float32(1.0 / 255.0)


def png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()


def webp(image: np.ndarray) -> bytes:
    """A format TensorFlow decodes but the server refuses (its header is not read)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image[..., 0]).save(out, "WEBP")
    return out.getvalue()


def jpeg(image: np.ndarray) -> bytes:
    return tf.io.encode_jpeg(image, quality=95).numpy()


def current_example(image: np.ndarray, label: int = 0, shape_fields: bool = True) -> bytes:
    if shape_fields:
        return serialize_example(image.tobytes(), label, *image.shape)
    return example(image=image.tobytes(), label=label)


def classic_example(image: np.ndarray, label: int = 0, dtype=np.float32) -> bytes:
    pixels = scaled(image) if dtype == np.float32 else image
    return example(image_raw=pixels.astype(dtype).tobytes(), label=label)


def expected(model, uint8_images: np.ndarray) -> np.ndarray:
    """The trained-model probabilities the export must reproduce."""
    return tf.nn.softmax(model(scaled(uint8_images), training=False)).numpy()
