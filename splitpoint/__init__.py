"""splitpoint: split a CNN between a Coral Edge TPU and a TensorFlow server."""

__version__ = "0.1.0"
