"""Heads kept loaded on the edge, one interpreter per split, so switching split is free.

Attaching the Edge TPU delegate can take seconds and the first inference loads
weights, so every head the policy may pick is loaded and run once at start.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from splitpoint.artifact_shapes import check_head
from splitpoint.bundle import Artifact, Bundle, SplitSpec, split_ranges
from splitpoint.codec import Quantization
from splitpoint.errors import BackendUnavailableError, EdgeTpuUnavailableError, SplitpointError
from splitpoint.runtime.litert import Device, HeadRunner, load_edgetpu_delegate

log = logging.getLogger(__name__)


@dataclass
class HeadOutput:
    split: int
    array: np.ndarray  # quantized cut tensor (k < K) or quantized model output (k = K); the first of several
    quantization: Quantization
    head_ms: float
    #: every tensor of a multi-tensor cut (or every model output at k = K), in the manifest's order
    arrays: list[np.ndarray] = field(default_factory=list)
    quantizations: list[Quantization] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.arrays:
            self.arrays, self.quantizations = [self.array], [self.quantization]


class EdgeHeads:
    def __init__(self, bundle: Bundle, device: Device, cpu_fallback: bool = False,
                 splits: list[int] | None = None, num_threads: int | None = None):
        m = bundle.manifest
        self.bundle = bundle
        self.manifest = m
        self.K = m.num_layers
        wanted = m.split_ids if splits is None else sorted(set(splits) | {self.K})
        delegate = None
        self.device = Device("cpu")
        if device.kind == "edgetpu":
            try:
                delegate = load_edgetpu_delegate(device)
                self.device = device
            except EdgeTpuUnavailableError:
                if not cpu_fallback:
                    raise
                log.warning("Edge TPU unavailable; running heads on the CPU (cpu_fallback = true)")
        self._runners: dict[int, HeadRunner] = {}
        self._accelerator = threading.Lock()
        t0 = time.perf_counter()
        for k in wanted:
            spec = m.split(k)
            if spec.head is None:
                continue
            self._runners[k] = self._load(spec, delegate, num_threads, cpu_fallback)
        self.input_quantization = m.input_wire.quantization
        assert self.input_quantization is not None, "manifest input.wire has no quantization"
        self.splits = [k for k in wanted if k == 0 or k in self._runners]
        zero = np.zeros((m.preprocessing.height, m.preprocessing.width, m.preprocessing.channels), np.uint8)
        for k in self._runners:  # first inference loads weights onto the TPU: do it now
            self._warm_up(k, self.preprocess(zero), cpu_fallback, num_threads)
        log.info("heads %s loaded on %s in %.2fs", split_ranges(self._runners), self.device, time.perf_counter() - t0)

    def _warm_up(self, k: int, x: np.ndarray, cpu_fallback: bool, num_threads: int | None) -> None:
        """Head k's first run. One that fails on the Edge TPU (loaded and prepared, but the device
        will not run it) runs on the CPU when cpu_fallback allows, as a head that will not
        prepare does (`_load`); otherwise, or when the CPU head fails too, a BackendUnavailableError."""
        runner = self._runners[k]
        try:
            self.run(k, x)
            return
        except Exception as exc:  # noqa: BLE001 - a device that loads the head but cannot run it
            failed = f"head {k} was loaded on {self.device if runner.on_edgetpu else 'the CPU'} but its first run " \
                     f"failed: {exc!r}"
            if not (runner.on_edgetpu and cpu_fallback):
                raise BackendUnavailableError(f"{failed}; check the device with `splitpoint doctor`") from exc
        log.warning("%s; head %d runs on the CPU (cpu_fallback = true)", failed, k)
        head = self.manifest.split(k).head
        assert head is not None  # a runner was loaded from it
        self._runners[k] = self._checked(k, head, None, num_threads)
        try:
            self.run(k, x)
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailableError(f"head {k}'s CPU head failed its first run too: {exc!r}") from exc

    def _load(self, spec: SplitSpec, delegate: object, num_threads: int | None, cpu_fallback: bool) -> HeadRunner:
        assert spec.head is not None
        if delegate is not None:
            if spec.edgetpu_head is None:
                log.warning("head %d is not compiled for the Edge TPU (%s); it runs on the CPU",
                            spec.split, spec.edgetpu.get("reason", spec.edgetpu.get("status")))
            else:
                try:
                    runner = HeadRunner(self.bundle.path(spec.edgetpu_head), delegate, num_threads)
                except BackendUnavailableError as err:
                    # The delegate loaded but this head will not prepare on it (a version mismatch
                    # between libedgetpu, the compiler and the interpreter): the int8 CPU head computes
                    # the same function, so a drone that allows it keeps flying, slower.
                    if not cpu_fallback:
                        raise
                    log.warning("%s; head %d runs on the CPU (cpu_fallback = true)", err, spec.split)
                else:
                    check_head(spec.edgetpu_head.path, self.manifest, spec.split, runner.input_shapes,
                               runner.output_shapes)
                    return runner
        return self._checked(spec.split, spec.head, None, num_threads)

    def _checked(self, k: int, head: Artifact, delegate: object, num_threads: int | None) -> HeadRunner:
        """The head loaded and checked against the manifest's shapes (BundleError naming the file):
        a head of another split, its digest rewritten, failed every frame on reshaping its output."""
        runner = HeadRunner(self.bundle.path(head), delegate, num_threads)
        check_head(head.path, self.manifest, k, runner.input_shapes, runner.output_shapes)
        return runner

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """uint8 frame (H, W, C) -> float32 (1, H, W, C) model input."""
        return self.manifest.preprocessing.apply(raw)

    def run(self, k: int, x: np.ndarray) -> HeadOutput:
        """Head k on a preprocessed input; k = 0 only quantizes the input for the wire.

        One invocation at a time (`_accelerator`, a leaf lock): an edge device has one
        accelerator, so a head on the capture thread waits for a local run on the executor,
        as the planner's timeline assumes (scheduler/paths.py). The wait is not in head_ms.
        k = 0 runs nothing on the accelerator (quantizing the input is CPU work), so it never
        waits for a local run: the frame goes to the link while the edge works on another."""
        if k == 0:
            return self._run(0, x)
        with self._accelerator:
            return self._run(k, x)

    def _run(self, k: int, x: np.ndarray) -> HeadOutput:
        t0 = time.perf_counter()
        q_in = self.input_quantization
        assert q_in is not None
        if k == 0:
            arr = q_in.quantize(x, np.uint8)
            return HeadOutput(0, arr, q_in, (time.perf_counter() - t0) * 1000)
        runner = self._runners.get(k)
        if runner is None:
            raise SplitpointError(f"split {k} is not loaded on this agent; loaded: {self.splits}")
        rq = runner.input_quantization or q_in
        outs = runner.run_all(rq.quantize(x, runner.input_dtype))
        quants = runner.output_quantizations
        assert all(q is not None for q in quants)
        return HeadOutput(k, outs[0], quants[0], (time.perf_counter() - t0) * 1000,  # type: ignore[arg-type]
                          outs, quants)  # type: ignore[arg-type]

    def run_local_all(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        """The whole model on the edge (k = K): (every float output, batch 1, manifest order; ms)."""
        out = self.run(self.K, x)
        return [q.dequantize(a) for a, q in zip(out.arrays, out.quantizations, strict=True)], out.head_ms
