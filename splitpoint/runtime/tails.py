"""Tails on the server: float Keras models run by TensorFlow, in batches.

TensorFlow places work on a GPU when one is visible; nothing here needs to
choose. A runner is thread-safe: a tf.function may be called from many threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import numpy as np

from splitpoint.artifact_shapes import check_tail
from splitpoint.bundle import Bundle, Manifest, check_artifact, split_ranges
from splitpoint.errors import BundleError, ConfigError, RequestError
from splitpoint.files import file_stamp
from splitpoint.runtime.tf import import_tensorflow
from splitpoint.wire_metadata import NOT_SERVED_DETAILS

log = logging.getLogger(__name__)


def tensorflow_devices() -> list[str]:
    tf = import_tensorflow()
    return [d.name for d in tf.config.list_logical_devices()]


class TailRunner:
    """One tail loaded and traced once for any batch size. Given the manifest, the model's
    inputs and outputs are checked against it before the tail is traced (BundleError naming
    `name`, the file's path in the bundle)."""

    def __init__(self, path: Path, split: int, manifest: Manifest | None = None, name: str = ""):
        tf = import_tensorflow()
        import keras

        t0 = time.perf_counter()
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file
            # TensorFlow and Keras imported: the file is what is wrong (exit 2, as for a modified
            # bundle); Keras calls a file that is not a zip archive 'File not found'
            import zipfile

            why = "not a .keras file (not a zip archive)" if path.is_file() and not zipfile.is_zipfile(path) else str(exc)
            raise BundleError(f"cannot load tail {path}: {why}") from None
        self.split = split
        if manifest is not None:
            check_tail(name or str(path), manifest, split, [tuple(t.shape) for t in self.model.inputs],
                       [tuple(t.shape) for t in self.model.outputs])
        #: one shape per tail input: a multi-tensor cut hands the tail several tensors
        self.input_shapes = [tuple(t.shape[1:]) for t in self.model.inputs]
        self.input_shape = self.input_shapes[0]
        self.num_outputs = len(self.model.outputs)
        model = self.model
        signature = [tf.TensorSpec((None, *s), tf.float32) for s in self.input_shapes]
        if len(signature) == 1:
            fn = lambda x: model(x, training=False)  # noqa: E731
        else:
            fn = lambda *xs: model(list(xs), training=False)  # noqa: E731
        self._fn = tf.function(fn, input_signature=signature)
        self._tf = tf
        self.run_all([np.zeros((1, *s), np.float32) for s in self.input_shapes])  # trace and warm now
        log.info("tail %d loaded and warm in %.2fs", split, time.perf_counter() - t0)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, *cut shape) -> float32 (N, outputs): a tail with one input and one output."""
        self._check_shapes([batch])
        return np.asarray(self._fn(self._tf.constant(batch, dtype=self._tf.float32)))

    def run_all(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """One float32 batch per tail input -> one float32 batch per model output, in the manifest's order."""
        if len(batches) == 1 and self.num_outputs == 1:
            return [self.run(batches[0])]
        self._check_shapes(batches)
        out = self._fn(*(self._tf.constant(b, dtype=self._tf.float32) for b in batches))
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in outs]

    def _check_shapes(self, batches: Sequence[np.ndarray]) -> None:
        """RequestError (INTERNAL) for batches the tail does not take, before the tf.function
        sees them: TensorFlow (2.21) keeps the function's lock when binding its inputs fails, so
        the next call from another thread waited for ever (a tail worker lost, its frame never
        answered)."""
        got = [tuple(np.shape(b))[1:] for b in batches]
        if len(got) != len(self.input_shapes) or not all(
                len(g) == len(w) and all(d is None or d == e for e, d in zip(g, w, strict=True))
                for g, w in zip(got, self.input_shapes, strict=True)):
            raise RequestError(grpc.StatusCode.INTERNAL, f"tail {self.split} takes {self.input_shapes} per frame, "
                                                         f"was given {got}")


class TailPool:
    """Tails kept warm: all of them, or the `budget` most recently used (LRU).

    `splits` (not empty) restricts the pool to those splits: the others are never loaded (a
    benchmark of a few splits of a large model must not load every tail: minutes and gigabytes).
    """

    def __init__(self, bundle: Bundle, budget: int = 0, preload: bool = True, splits: Sequence[int] = (),
                 stopping: Callable[[], bool] = lambda: False):
        self.bundle = bundle
        self.budget = budget
        self._runners: OrderedDict[int, TailRunner] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}
        #: split -> (its file's identity, the error) of a load that failed while serving: frames
        #: for it fail with that error without hashing the file again until the file changes
        self._failed: dict[int, tuple[tuple[int, ...] | None, BundleError]] = {}
        self._serving = False  # set after preload: a load failing from then on is a bundle changed on disk
        self.servable = [s.split for s in bundle.manifest.splits if s.tail is not None]
        if splits:
            ids = bundle.manifest.split_ids
            unknown = sorted({k for k in splits if k not in ids})
            if unknown:
                raise ConfigError("splits", unknown, f"not splits of {bundle.manifest.model_name}; its splits: {split_ranges(ids)}")
            self.servable = [k for k in self.servable if k in set(splits)]
            if not self.servable:  # --splits K (all on the edge, no tail): a server that answered no frame
                raise ConfigError("splits", list(splits), f"no tail to serve: split {bundle.manifest.num_layers} runs "
                                                          "wholly on the edge; give splits below it")
            log.info("serving splits %s only (tails loaded: %s)", split_ranges(splits), split_ranges(self.servable))
        if preload:
            for k in self.servable if budget <= 0 else self.servable[-budget:]:
                if stopping():  # SIGTERM while starting: a big bundle's tails take minutes, a pod's grace 30 s
                    log.info("start-up stopped after %d of %d tails", len(self._runners), len(self.servable))
                    break
                self.get(k)
        self._serving = True

    def warm(self) -> list[int]:
        with self._lock:
            return list(self._runners)

    def get(self, split: int) -> TailRunner:
        with self._lock:
            runner = self._runners.get(split)
            if runner is not None:
                self._runners.move_to_end(split)
                return runner
            if split not in self.servable:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"split {split} {NOT_SERVED_DETAILS}; servable: {split_ranges(self.servable)}")
            load_lock = self._loading.setdefault(split, threading.Lock())
        with load_lock:  # one loader per split; other splits keep running meanwhile
            with self._lock:
                if split in self._runners:
                    return self._runners[split]
            runner = self._load(split)
            with self._lock:
                self._runners[split] = runner
                while self.budget > 0 and len(self._runners) > self.budget:
                    evicted, _ = self._runners.popitem(last=False)
                    log.info("tail %d evicted (warm budget %d)", evicted, self.budget)
            return runner


    def _load(self, split: int) -> TailRunner:
        """The tail of `split`, its file checked against the manifest as at start (load_bundle).
        A tail evicted (warm_tails) is read from disk again: a file replaced meanwhile by another
        model of the same shapes answered frames wrongly with status OK. This runs on the thread
        that needs the tail (a tail worker, or start-up), never on a gRPC thread: hashing a large
        tail takes a second or more."""
        spec = self.bundle.manifest.split(split)
        assert spec.tail is not None
        path = self.bundle.path(spec.tail)
        before = file_stamp(path)
        failed = self._failed.get(split)
        if failed is not None and failed[0] == before:
            raise failed[1]  # the same bad file: no hashing it again, nor a log line, for every frame
        try:
            # At start a file load_bundle has just hashed, unchanged since, is not hashed again.
            if self._serving or before is None or self.bundle.checked.get(spec.tail.path) != before:
                check_artifact(self.bundle.root, spec.tail)
            runner = TailRunner(path, split, self.bundle.manifest, spec.tail.path)
            if file_stamp(path) != before:  # replaced between the check and the load: what ran is unknown
                raise BundleError(f"{path} changed while it was loaded")
        except BundleError as exc:
            if not self._serving:
                raise  # at start: the command's own error (exit 2), as for load_bundle's check
            if before is not None and self.bundle.checked.get(spec.tail.path) == before:
                # the file hashed at start, unchanged, but not the manifest's model (artifact_shapes):
                # the bundle was wrong from the start, not changed since
                err = BundleError(f"tail of split {split} not loaded: {exc}")
            else:
                err = BundleError(f"tail of split {split} not loaded: {exc}; the bundle changed on disk since the "
                                  "server started: restart the server with the new bundle")
            log.error("%s", err)
            self._failed[split] = (before, err)
            raise err from None
        self._failed.pop(split, None)
        return runner
