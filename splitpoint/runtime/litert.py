"""Heads on the edge: LiteRT interpreters on the CPU or the Coral Edge TPU.

The interpreter comes from the first of ai_edge_litert, tflite_runtime and
tensorflow.lite that imports. tflite-runtime 2.14 (the only runtime for 32-bit
ARM) is built against NumPy 1 and breaks under NumPy 2, so that pairing is
refused before it is imported (`numpy_pairing_problem`). The Edge TPU is a delegate, libedgetpu.so.1, loaded through
Google's pycoral when it is importable and directly otherwise; the PyPI
package named "pycoral" is an unrelated project and is never used.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import platform
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from splitpoint import native_logs
from splitpoint.codec import Quantization
from splitpoint.errors import (
    BackendUnavailableError,
    BundleError,
    ConfigError,
    EdgeTpuUnavailableError,
)

log = logging.getLogger(__name__)

EDGETPU_SHARED_LIB = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1"
)
_DEVICE_RE = re.compile(r"^(cpu|edgetpu)(?::((?:usb|pci)(?::\d+)?))?$")


@dataclass(frozen=True)
class Device:
    """'cpu', 'edgetpu' (first Edge TPU found), 'edgetpu:usb:0', 'edgetpu:pci:1'."""

    kind: str
    address: str = ""  # 'usb:0', 'pci', ... as libedgetpu's "device" option takes it

    @classmethod
    def parse(cls, text: str, key: str = "device") -> Device:
        m = _DEVICE_RE.match(text.strip().lower())
        if not m or (m.group(1) == "cpu" and m.group(2)):
            raise ConfigError(key, text, "expected cpu, edgetpu, edgetpu:usb[:N] or edgetpu:pci[:N]")
        return cls(m.group(1), m.group(2) or "")

    def __str__(self) -> str:
        return f"{self.kind}:{self.address}" if self.address else self.kind


def _numpy_major() -> int:
    try:
        return int(np.__version__.split(".")[0])
    except ValueError:
        return 0


def _findable(name: str) -> bool:
    """Is top-level module `name` installed? Finds it without running its code."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules[name] = None
        return False


def numpy_pairing_problem() -> str | None:
    """Why heads cannot load here when tflite_runtime would run them under NumPy 2, else None.

    The one check `splitpoint doctor` and everything that loads a head share. It never
    imports tflite_runtime: under NumPy 2 that import prints NumPy's own traceback
    ("_ARRAY_API not found") before failing, which a user would read as a crash.
    """
    if _numpy_major() < 2 or not _findable("tflite_runtime"):
        return None
    try:
        from ai_edge_litert import interpreter  # noqa: F401  (LiteRT is preferred and NumPy 2 safe)

        return None
    except ImportError:
        pass
    try:
        from importlib import metadata

        version = " " + metadata.version("tflite-runtime")
    except Exception:  # a tflite_runtime without metadata still gets the message
        version = ""
    return (f"tflite-runtime{version} cannot load models under NumPy {np.__version__} (it is built for NumPy 1.x): "
            "pip install 'numpy<2' (on 32-bit Raspberry Pi OS install splitpoint with its [edge-32bit] extra), or, "
            "on a 64-bit system, install ai-edge-litert (the [edge] extra); see docs/field-deployment.md")


def interpreter_module() -> tuple[ModuleType | Any, str]:
    """(module with Interpreter and load_delegate, its name), LiteRT first.

    Raises BackendUnavailableError with `numpy_pairing_problem`'s message rather than
    importing tflite_runtime under NumPy 2.
    """
    try:
        from ai_edge_litert import interpreter as litert

        return litert, "ai_edge_litert"
    except ImportError:
        pass
    problem = numpy_pairing_problem()
    if problem:
        raise BackendUnavailableError(problem)
    try:
        from tflite_runtime import interpreter as tflr  # type: ignore[import-not-found]

        return tflr, "tflite_runtime"
    except ImportError:
        pass
    try:
        from splitpoint.runtime.tf import import_tensorflow

        tf = import_tensorflow()

        class _TfLite:  # same surface as the two packages above
            Interpreter = tf.lite.Interpreter
            load_delegate = staticmethod(tf.lite.experimental.load_delegate)

        return _TfLite, "tensorflow.lite"
    except BackendUnavailableError:
        pass
    raise BackendUnavailableError(
        "no TFLite interpreter: install LiteRT (pip install ai-edge-litert; splitpoint's [edge] extra brings it), "
        "or on 32-bit ARM tflite-runtime 2.14 with numpy<2 (the [edge-32bit] extra); see docs/field-deployment.md"
    )


def runtime_versions() -> dict[str, str]:
    """Versions of what runs heads here, for profiles and `doctor`."""
    from importlib import metadata

    out = {}
    for dist in ("ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "numpy", "pycoral"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


_delegates: dict[str, Any] = {}
_delegate_lock = threading.Lock()


def load_edgetpu_delegate(device: Device) -> Any:
    """The Edge TPU delegate for `device`, loaded once per address and shared.

    Raises EdgeTpuUnavailableError saying what is missing: the library (install
    libedgetpu1-std from Coral's package repository) or the device.
    """
    key = device.address
    with _delegate_lock:
        if key in _delegates:
            return _delegates[key]
        options = {"device": device.address} if device.address else {}
        try:
            try:
                # Google's pycoral (from Coral's repository) when present; it knows the platform quirks.
                from pycoral.utils.edgetpu import load_edgetpu_delegate as coral_load  # type: ignore[import-not-found]

                delegate = coral_load(options)
            except ImportError:
                module, _ = interpreter_module()
                # Probe the library first: a failed load_delegate leaves a half-built Delegate
                # whose destructor prints a traceback.
                ctypes.CDLL(EDGETPU_SHARED_LIB)
                delegate = module.load_delegate(EDGETPU_SHARED_LIB, options)
        except (ValueError, OSError, RuntimeError) as exc:
            raise EdgeTpuUnavailableError(
                f"cannot load the Edge TPU delegate {EDGETPU_SHARED_LIB} for device {device} ({exc}). "
                "Is libedgetpu installed (package libedgetpu1-std from Coral's apt repository) and the "
                "accelerator plugged in? Use --device cpu, or allow CPU fallback, to run heads on the CPU."
            ) from None
        _delegates[key] = delegate
        log.info("Edge TPU delegate loaded for %s", device)
        return delegate


class HeadRunner:
    """One head (.tflite) kept loaded. Thread-safe: invocations are serialised."""

    def __init__(self, path: Path, delegate: Any = None, num_threads: int | None = None):
        module, self.backend = interpreter_module()
        kwargs: dict[str, Any] = {"model_path": str(path)}
        if delegate is not None:
            kwargs["experimental_delegates"] = [delegate]
        if num_threads:
            kwargs["num_threads"] = num_threads
        try:
            # The first interpreter of a process announces its XNNPACK delegate on fd 2 (LiteRT's
            # logger has no off switch): drop that line, keep anything else it says.
            with native_logs.filtered_stderr():
                self._interp = module.Interpreter(**kwargs)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            hint = _delegate_hint(str(exc)) if delegate is not None else ""
            raise BackendUnavailableError(f"cannot load head {path}: {exc}{hint}") from None
        self.path = path
        self.on_edgetpu = delegate is not None
        inp = self._interp.get_input_details()[0]
        outs = _ordered_outputs(self._interp)
        self._in_index = inp["index"]
        self.input_dtype = np.dtype(inp["dtype"])
        self.input_shape = tuple(int(d) for d in inp["shape"])
        #: every input's shape: a head has one (a file with more is another model: artifact_shapes)
        self.input_shapes = [tuple(int(x) for x in d["shape"]) for d in self._interp.get_input_details()]
        self.input_quantization = _quantization(inp)
        self._out_indices = [d["index"] for d in outs]
        self.output_dtypes = [np.dtype(d["dtype"]) for d in outs]
        self.output_shapes = [tuple(int(x) for x in d["shape"]) for d in outs]
        self.output_quantizations = [_quantization(d) for d in outs]
        self._lock = threading.Lock()

    # The first output: a head with one output (every single-tensor cut) needs nothing else.
    @property
    def output_dtype(self) -> np.dtype:
        return self.output_dtypes[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_shapes[0]

    @property
    def output_quantization(self) -> Quantization | None:
        return self.output_quantizations[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Quantized input (input_dtype) -> quantized first output (a copy)."""
        return self.run_all(x)[0]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Quantized input (input_dtype) -> every quantized output, in the head's order (copies)."""
        with self._lock:
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            return [self._interp.get_tensor(i).copy() for i in self._out_indices]


def head_file_shapes(path: Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """A head file's input and output shapes (outputs in the order it was built with), read
    without allocating or running it: an Edge TPU head's custom op is resolved only then, so
    this works without the delegate (inspect and doctor check files this way). No LiteRT:
    BackendUnavailableError; a file it cannot read: BundleError."""
    module, _ = interpreter_module()
    try:
        with native_logs.filtered_stderr():
            interp = module.Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise BundleError(f"cannot read head {path}: {exc}; partition again") from None
    return ([tuple(int(x) for x in d["shape"]) for d in interp.get_input_details()],
            [tuple(int(x) for x in d["shape"]) for d in _ordered_outputs(interp)])


def _ordered_outputs(interp: Any) -> list[dict]:
    """Output details in the order the head was built with.

    The partitioner names a head's outputs cut_00, cut_01, ... in its signature;
    get_output_details() lists them in the converter's tensor order, which is not
    that order once there are several.
    """
    details = interp.get_output_details()
    if len(details) == 1:
        return details
    by_index = {d["index"]: d for d in details}
    try:
        sigs = interp._get_full_signature_list()  # the name -> tensor index map; no public accessor
        outputs = next(iter(sigs.values()))["outputs"]
        return [by_index[outputs[name]] for name in sorted(outputs)]
    except (AttributeError, KeyError, StopIteration):
        pass

    def position(d: dict) -> int:  # "StatefulPartitionedCall:3" is the function's fourth output
        m = re.search(r":(\d+)$", d.get("name", ""))
        return int(m.group(1)) if m else 0

    return sorted(details, key=position)


#: what the Edge TPU delegate says when versions do not match, and what to do about it
_DELEGATE_HINTS = (
    ("which is newer than this runtime version",
     "the head was compiled for a newer libedgetpu than this device has: upgrade libedgetpu1-std, "
     "or partition again with an edgetpu_compiler that targets this runtime (edgetpu_compiler -m N)"),
    ("EdgeTpuDelegateForCustomOp",
     "libedgetpu and this TFLite interpreter come from different TensorFlow versions: install a "
     "matching pair (docs/field-deployment.md), or set cpu_fallback = true to run the CPU heads"),
)


def _delegate_hint(message: str) -> str:
    for needle, hint in _DELEGATE_HINTS:
        if needle in message:
            return f" ({hint})"
    return ""


def _quantization(detail: dict) -> Quantization | None:
    qp = detail.get("quantization_parameters") or {}
    scales = qp.get("scales")
    if scales is None or len(scales) == 0:
        return None
    zps = qp.get("zero_points")
    if zps is None:  # TFLite's flatbuffer default: symmetric quantization, zero point 0
        zps = [0] * len(scales)
    return Quantization(tuple(float(s) for s in scales), tuple(int(z) for z in zps), int(qp.get("quantized_dimension", 0)))
