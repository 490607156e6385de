"""Shared fixtures: a digits bundle made once per test session, servers on port 0."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import CloudProcess, quiet_progress, running_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: the shared data next to the checkout (../shared): the real bandwidth traces
SHARED = Path(__file__).resolve().parents[2] / "shared"


def require_shared(relpath: str) -> Path:
    """SHARED/relpath; missing, a skip on a developer's machine but a failure in CI (CI=true),
    where a silently skipped trace test would let the benchmark's inputs go untested."""
    path = SHARED / relpath
    if not path.exists():
        msg = f"{path} is missing: the shared data set (../shared next to the checkout) is needed"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " and CI=true", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """No cyclic garbage collection while a test body runs; it runs in setup and teardown.

    This process holds TensorFlow and what a thousand tests left behind, and a gen-2 collection
    of that heap stops every thread for 0.2-0.9 s (41 pauses over 30 ms in one full run,
    measured 2026-12-05). test_agent_falls_back_on_missed_deadlines_and_ignores_late_answers
    failed once in three CI runs: no hedge fired in the 220 ms between the frame's hedge time and
    the server's refusal - a stall that fits one such pause, and that 60 runs of it alone, beside
    CPU and disk load, never showed. Tests assert the agent's timing, not this process's
    collector: an agent's own process (LiteRT, no TensorFlow) tracks about 38 thousand objects,
    which a full collection scans in about 4 ms (370 thousand and 150 ms with TensorFlow
    imported). Explicit gc.collect() calls still run."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def shared_file() -> Callable[[str], Path]:
    """`shared_file("data/traces/X")`: the path, or a skip (a failure in CI) when it is missing."""
    return require_shared


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped digits CNN partitioned at every split (about 5 s)."""
    from splitpoint.models import reference_model
    from splitpoint.partition import PartitionOptions, partition

    out = tmp_path_factory.mktemp("bundles") / "digits"
    partition(reference_model("digits-cnn"), PartitionOptions(output=out, edgetpu_compiler=None), progress=quiet_progress)
    return out


@pytest.fixture
def cloud_server(digits_bundle: Path) -> Iterator[object]:
    """A real server on 127.0.0.1, port 0 (the port it bound is `.port`)."""
    with running_server(digits_bundle) as server:
        yield server


@pytest.fixture
def cloud_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., CloudProcess]]:
    """Start real `splitpoint cloud` processes: make(*flags, listen=..., bundle=..., python=...).
    The bundle is the digits bundle unless given (asked for only then: partitioning needs
    TensorFlow, which the edge-side wheel run lacks). Each is stopped (SIGTERM) at the end."""
    started: list[CloudProcess] = []

    def make(*extra: str, listen: str = "127.0.0.1:0", bundle: Path | None = None,
             python: str | None = None) -> CloudProcess:
        if bundle is None:
            bundle = request.getfixturevalue("digits_bundle")
        proc = CloudProcess(bundle, listen, tmp_path / f"cloud-{len(started)}.log", list(extra), python=python)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
