"""Importing TensorFlow quietly, or saying plainly that it is missing."""

from __future__ import annotations

import logging
import os
from types import ModuleType

from splitpoint.errors import BackendUnavailableError

log = logging.getLogger(__name__)


def import_tensorflow() -> ModuleType:
    """TensorFlow with its C++ log spam turned down. The edge side never needs it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras  # noqa: F401  (Keras 3 comes with TensorFlow)
        import tensorflow as tf
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorFlow is not installed ({exc}); the server and the partitioner need it: "
            "pip install 'splitpoint[cloud]'"
        ) from None
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    tf.get_logger().setLevel(logging.ERROR)
    return tf
