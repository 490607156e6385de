"""Helpers the tests share that are not fixtures: the environment for `python -m splitpoint`
subprocesses, `splitpoint cloud` as a real process, an in-process server, a silent progress.

Importable as `helpers` from every test module and from conftest.py: pyproject.toml puts tests/
on sys.path (`pythonpath`), also under --import-mode=importlib (scripts/ci_edge_py313.sh).
Nothing here imports TensorFlow at import time: the edge_side tests run without it.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: the checkout these tests belong to
REPO = Path(__file__).resolve().parents[1]

_LISTENING = "splitpoint cloud listening on "


def zero_frame(bundle: Path, k: int) -> Any:
    """A well-formed InferRequest for split k of `bundle`: zeros of its cut tensor's shape and dtype."""
    import numpy as np

    from splitpoint.bundle import load_bundle
    from splitpoint.codec import encode
    from splitpoint.v1 import offload_pb2

    m = load_bundle(bundle, verify=False).manifest
    (cut,) = m.split(k).cut
    req = offload_pb2.InferRequest(frame_id=k, model_digest=m.model_digest, split=k)
    req.tensors.append(encode(np.zeros(cut.shape, cut.dtype), name=cut.name, quantization=cut.quantization))
    return req


class ManualClock:
    """A clock the test moves by hand (`clock.t += 0.5`): for units that take `clock=`."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def three_split_policy(name: str, deadline_ms: float | None = None, clock: ManualClock | None = None,
                       race: bool = True) -> Any:
    """An AdaptivePolicy over a made-up model of three splits (k = 0: 50 kB cut, 1 ms head,
    10 ms tail; k = 1: 10 kB, 20 ms, 5 ms; k = 2 = all-edge: 60 ms) on an 8 Mbps, 20 ms link;
    `clock`: its link estimator's; `race`: PolicyConfig.race."""
    from scheduler.link import LinkEstimator
    from scheduler.objectives import PolicyConfig
    from scheduler.policy import AdaptivePolicy

    cost = cost_model([50_000, 10_000, 0], [1.0, 20.0, 60.0], [10.0, 5.0, 0.0], head_w=[3.0] * 3, tx_w=1.0)
    cfg = PolicyConfig(name=name, deadline_ms=deadline_ms, edge_profile="e", cloud_profile="c", race=race)
    est = LinkEstimator(initial_bandwidth_bps=8e6, initial_rtt_ms=20.0, clock=clock or ManualClock())
    return AdaptivePolicy(cfg, cost, est)


def cost_model(wire: list[int], head: list[float], tail: list[float], head_w: list[float] | None = None,
               tx_w: float = 2.0) -> Any:
    """A CostModel from constant per-split figures: cut bytes, edge head ms, cloud tail ms (index =
    split); `head_w`: edge watts per split for an energy model (None: none), `tx_w` the radio's."""
    from scheduler.cost import CostModel, EnergyModel
    from scheduler.profiles import Profile, SplitProfile, StageStats

    def profile(side: str, times: list[float]) -> Profile:
        return Profile(side, "sha256:paths", "synthetic", {},
                       {k: SplitProfile(k, wire[k], StageStats.constant(t)) for k, t in enumerate(times)})

    energy = None
    if head_w is not None:
        energy = EnergyModel(head_power=lambda k: head_w[k], idle_w=1.0, tx_watts=lambda bps: tx_w)
    return CostModel(profile("edge", head), profile("cloud", tail), energy)


def policy_for(cost: Any, name: str = "min-latency", bw: float = 1.2e6, rtt_ms: float = 50.0, **cfg: Any) -> Any:
    """An AdaptivePolicy over `cost` with its link estimate forced to `bw` and `rtt_ms`."""
    from scheduler.link import LinkEstimator
    from scheduler.objectives import PolicyConfig
    from scheduler.policy import AdaptivePolicy

    link = LinkEstimator()
    link.force(bandwidth_bps=bw, rtt_ms=rtt_ms)
    return AdaptivePolicy(PolicyConfig(name=name, edge_profile="e", cloud_profile="c", **cfg), cost, link)


def cli_env() -> dict[str, str]:
    """os.environ for a `python -m splitpoint` subprocess: this checkout first on PYTHONPATH
    (the code under test, not an installed copy), TensorFlow's C++ chatter off, output unbuffered
    so that a line the test waits for arrives when it is printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CloudProcess:
    """`splitpoint cloud` as a real process; `.address` is what it printed it listens on.

    python: the interpreter (the edge-side wheel run starts the server under another one, which
    has TensorFlow). stderr goes to `log`; a server that exits or prints no listening line within
    `start_timeout_s` fails the test with the log's tail."""

    def __init__(self, bundle: Path, listen: str, log: Path, extra: list[str], *,
                 python: str | None = None, start_timeout_s: float = 120.0):
        with open(log, "a") as err:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", str(bundle),
                 "--listen", listen, *extra],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=cli_env(),
            )
        self.log = log
        self.address = ""
        # stdout is read on a thread so that the start-up deadline holds even when the
        # server prints nothing at all
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="cloud-stdout", daemon=True).start()
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"server printed no listening line within {start_timeout_s:.0f} s: "
                                     f"{log.read_text()[-2000:]}") from None
            if line is None:
                self.kill()
                raise AssertionError(f"server exited ({self.proc.returncode}) before listening: "
                                     f"{log.read_text()[-2000:]}")
            if line.startswith(_LISTENING):
                self.address = line[len(_LISTENING):].strip()
                return

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (the server drains), then kill after `timeout`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextmanager
def running_server(bundle: Path, **config: Any) -> Iterator[Any]:
    """An in-process CloudServer on 127.0.0.1, port 0 (the port it bound is `.port`), stopped on exit.
    config: more CloudConfig fields."""
    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer

    settings: dict[str, Any] = {"listen": "127.0.0.1:0", "grace_s": 5.0, "insecure": True, **config}
    server = CloudServer(CloudConfig(bundle=str(bundle), **settings)).start()
    try:
        yield server
    finally:
        server.stop()


class _QuietProgress:
    def update(self, label: str, advance: int = 1) -> None:
        logging.getLogger("tests").debug("partition progress: %s", label)


def quiet_progress(total: int) -> _QuietProgress:
    """`partition(..., progress=quiet_progress)`: progress to a debug log, not the terminal."""
    return _QuietProgress()


def build_dying_at(job: Any, split: int, sig: int = signal.SIGSEGV) -> dict:
    """`partition(..., build=functools.partial(build_dying_at, split=k))`: builds every split as usual
    except `split`, where the worker process kills itself with `sig` - a real death by a signal, as
    the TFLite converter's own SIGSEGV is, without depending on a TensorFlow bug. Module-level, so
    that a spawned worker can unpickle it (pyproject.toml puts tests/ on sys.path)."""
    if job.split == split:
        os.kill(os.getpid(), sig)
    from splitpoint.split_build import build_split

    return build_split(job)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG that is only a header declaring `width` x `height`: Pillow reads the size when it
    opens the file, so a decompression bomb costs a few bytes to make."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def finish_process(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> tuple[str, str]:
    """(stdout, stderr) once `proc` exits; a hang fails with every thread's stack (run it with
    PYTHONFAULTHANDLER=1: SIGABRT then prints them), not just a timeout."""
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = "(no stack dump within 10 s)"
        raise AssertionError(f"the process did not exit within {timeout_s:g} s; its threads:\n{err[-10000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def fake_cv2(frames: list[Any], opens: bool = True, read: Any = None) -> Any:
    """Just enough of cv2 for CameraSource: VideoCapture, cvtColor and the constants it uses. Each
    capture delivers `frames`, then fails a read; `read()`, when given, answers every read instead
    (a read that hangs, say). `captures`: every VideoCapture made, with how often it was released."""
    import types

    import numpy as np

    mod: Any = types.ModuleType("cv2")
    mod.COLOR_BGR2RGB, mod.COLOR_BGR2GRAY, mod.COLOR_BGRA2RGB, mod.COLOR_BGRA2GRAY = 1, 2, 3, 4
    mod.CAP_PROP_FRAME_COUNT = 7
    mod.captures = []

    def cvt(img: np.ndarray, code: int) -> np.ndarray:
        rgb = img[..., 2::-1]
        return rgb.mean(axis=-1).astype(np.uint8) if code in (2, 4) else np.ascontiguousarray(rgb)

    class VideoCapture:
        def __init__(self, what: object) -> None:
            self.what, self.released, self.left = what, 0, list(frames)
            mod.captures.append(self)

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return opens

        def read(self) -> tuple[bool, np.ndarray | None]:
            if read is not None:
                return read()
            return (True, self.left.pop(0)) if self.left else (False, None)

        def get(self, prop: int) -> float:
            return 0.0

        def release(self) -> None:
            self.released += 1

    mod.VideoCapture = VideoCapture
    mod.cvtColor = cvt
    return mod
