"""Importing TensorFlow quietly, or saying plainly that it is missing."""

from __future__ import annotations

import contextlib
import logging
import sys
from types import ModuleType

from splitpoint import native_logs
from splitpoint.errors import BackendUnavailableError
from splitpoint.extras import install_hint

log = logging.getLogger(__name__)


def import_tensorflow() -> ModuleType:
    """TensorFlow without its load-time chatter (splitpoint -v shows it). The edge side never needs it."""
    native_logs.quiet_environment()
    # absl prints its InitializeLog warning and the oneDNN notice while the libraries load,
    # whatever TF_CPP_MIN_LOG_LEVEL says: only capturing fd 2 then keeps them off the screen.
    # Once loaded, nothing prints: later calls (a tail loaded per request) leave fd 2 alone.
    loading = native_logs.filtered_stderr() if "tensorflow" not in sys.modules else contextlib.nullcontext()
    try:
        with loading:
            import keras  # noqa: F401  (Keras 3 comes with TensorFlow)
            import tensorflow as tf
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorFlow is not installed ({exc}); the server and the partitioner need it: "
            f"{install_hint('cloud', 'tensorflow')}"
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
