"""Importing TensorFlow quietly, or saying plainly that it is missing."""

from __future__ import annotations

import logging
from types import ModuleType

from splitpoint import native_logs
from splitpoint.errors import BackendUnavailableError

log = logging.getLogger(__name__)


def import_tensorflow() -> ModuleType:
    """TensorFlow without its load-time chatter (splitpoint -v shows it). The edge side never needs it."""
    native_logs.quiet_environment()
    try:
        # absl prints its InitializeLog warning and the oneDNN notice while the libraries load,
        # whatever TF_CPP_MIN_LOG_LEVEL says: only capturing fd 2 here keeps them off the screen.
        with native_logs.filtered_stderr():
            import keras  # noqa: F401  (Keras 3 comes with TensorFlow)
            import tensorflow as tf
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorFlow is not installed ({exc}); the server and the partitioner need it: "
            "pip install 'splitpoint[cloud]'"
        ) from None
    if native_logs.verbose():
        return tf
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    tf.get_logger().setLevel(logging.ERROR)
    return tf
