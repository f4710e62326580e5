"""vertex-trainer: train-and-evaluate for Vertex AI on tf.distribute, exporting a SavedModel."""

__version__ = "0.1.0"
