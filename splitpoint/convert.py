"""Keras head -> full-integer int8 TFLite (uint8 input, int8 outputs, batch 1), calibrated on
representative frames: the edge's half of a split, in the form edgetpu_compiler accepts."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from splitpoint.errors import PartitionError

log = logging.getLogger("splitpoint.partition")


def as_list(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def convert_head(tf: Any, head: Any, calibration: np.ndarray) -> bytes:
    """Full-integer int8 TFLite with a static batch of 1: what edgetpu_compiler accepts."""
    in_shape = (1, *head.inputs[0].shape[1:])
    # Named outputs: the head's signature keeps their order (runtime/litert.py reads it back).
    fn = tf.function(lambda x: {f"cut_{i:02d}": t for i, t in enumerate(as_list(head(x, training=False)))})
    concrete = fn.get_concrete_function(tf.TensorSpec(in_shape, tf.float32))
    # The converter freezes the variables it finds on this trackable: hand it the backend ones.
    holder = tf.Module()
    holder.variables_ = [getattr(v, "value", v) for v in head.weights]
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.int8
    with _native_stderr_captured() as captured:
        try:
            return bytes(conv.convert())
        except Exception as exc:  # the converter raises ConverterError and plain exceptions
            raise PartitionError(
                f"cannot convert {head.name} to full-integer TFLite: {str(exc).splitlines()[0]}"
            ) from None
        finally:
            log.debug("converter output for %s: %s", head.name, captured())


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[Callable[[], str]]:
    """The converter's C++ code chats on file descriptor 2; keep that off the user's terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.seek(0)
            return tmp.read().decode(errors="replace").strip()[-2000:]

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tflite_param_bytes(tflite: bytes) -> int:
    """Bytes of constant buffers (weights, biases) in a .tflite model."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(tflite, 0)
    return int(sum(m.Buffers(i).DataLength() for i in range(m.BuffersLength())))
