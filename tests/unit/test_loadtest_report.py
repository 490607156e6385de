"""`splitpoint loadtest`'s printed report says when part of the fleet never opened a stream.

Under mutual TLS every drone with the one client certificate is one agent to the server, so
`max_streams_per_agent` (4) refuses the rest: `--agents 50` then measured 4 drones, and the
report read like 50 (the refused drones' frames counted as "skipped (window full)"; now
"with no stream open").
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from splitpoint.loadtest_report import LoadReport

pytestmark = pytest.mark.edge_side  # no TensorFlow

REFUSED = "RESOURCE_EXHAUSTED: this agent already has 4 Infer streams open (max_streams_per_agent)"


def test_a_fleet_partly_refused_says_how_many_drones_ran_and_why() -> None:
    report = LoadReport(config={}, seconds=5.0, connected=4, last_error=REFUSED, sent=200, answered=200,
                        no_stream=50, per_agent_answered=[50, 50, 50, 0, 50])
    text = report.text()
    assert "0 skipped (window full), 50 with no stream open, 0 unanswered" in text
    assert "only 4 of 5 drones opened a stream" in text
    assert REFUSED in text


def test_a_whole_fleet_says_nothing_more() -> None:
    report = LoadReport(config={}, seconds=5.0, connected=2, sent=10, answered=10, per_agent_answered=[5, 5])
    assert "opened a stream" not in report.text() and "no stream" not in report.text()


class _RpcError(grpc.RpcError):
    """An error as a gRPC call raises it: a status code and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Call:
    """An Infer call as gRPC hands it back: metadata first, then the answers or the error."""

    def __init__(self, metadata: tuple, iterated: threading.Event) -> None:
        self.metadata, self.iterated = metadata, iterated

    def initial_metadata(self) -> tuple:
        return self.metadata

    def done(self) -> bool:
        return False  # a refused call's status may not have arrived when its metadata "returns"

    def __iter__(self) -> Any:
        self.iterated.set()
        if not self.metadata:
            raise _RpcError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        return iter(())


@pytest.mark.parametrize("taken", [False, True])
def test_a_drone_is_connected_only_once_the_server_took_its_stream(taken: bool) -> None:
    """A stream the server refused (a token, a limit) "returned" empty metadata before its status:
    the drone counted as connected, and a loadtest without the token ended in figures of nothing
    instead of the refusal (a full test run, once)."""
    from splitpoint.loadtest import LoadtestConfig, _Drone, _Tally
    from splitpoint.wire_metadata import REPLICA_METADATA_KEY

    conf = LoadtestConfig(bundle="b", target="127.0.0.1:1", insecure=True)
    tally = _Tally()
    drone = _Drone(0, conf, conf.security, [], tally)
    iterated = threading.Event()
    call = _Call(((REPLICA_METADATA_KEY, "replica-a"),) if taken else (), iterated)
    drone.stub = SimpleNamespace(Infer=lambda requests, metadata=None: call)  # type: ignore[assignment]
    drone.start()
    assert iterated.wait(5.0)
    drone.stop()
    drone.close(time.monotonic() + 5.0)
    assert drone.ready.is_set() == taken
    assert tally.last_error == ("" if taken else "UNAUTHENTICATED: missing or invalid bearer token")


@pytest.mark.parametrize(("changes", "said"), [
    ({"fps": 1e9}, "fps = 1000000000: x 10 agents is more than one pacer sends (at most 100000 frames/s in all"),
    ({"agents": 100_000_000}, "agents = 100000000: must be at most 10000"),
    ({"duration": 1e12}, "duration = 1000000000000: must be at most 2147483 s"),
])
def test_a_load_no_one_process_can_pace_is_refused_before_it_starts(changes: dict[str, Any], said: str) -> None:
    """--fps 1e9 paced a billion frames for a 1 s run and --agents 100000000 made as many drones:
    both hung past any timeout."""
    from splitpoint.errors import ConfigError
    from splitpoint.loadtest import LoadtestConfig

    conf = LoadtestConfig(bundle="b", target="127.0.0.1:1", insecure=True, **changes)
    with pytest.raises(ConfigError) as info:
        conf.validate()
    assert str(info.value).startswith(said), str(info.value)
    LoadtestConfig(bundle="b", target="127.0.0.1:1", insecure=True, agents=10_000, fps=10).validate()


class _ScriptedCall:
    """An Infer call taken by `replica` that answers each frame as `script` says: an error code, "ok",
    "lose" (the stream fails with it in flight), or nothing (missing: a hung server)."""

    def __init__(self, replica: str, script: dict[int, str], requests: Any) -> None:
        self.replica, self.script, self.requests = replica, script, requests

    def initial_metadata(self) -> tuple:
        from splitpoint.wire_metadata import REPLICA_METADATA_KEY
        return ((REPLICA_METADATA_KEY, self.replica),)

    def __iter__(self) -> Any:
        from splitpoint.v1 import offload_pb2
        for req in self.requests:  # ends when the drone half-closes (stop)
            how = self.script.get(req.frame_id)
            if how == "lose":
                raise _RpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
            if how is not None:
                resp = offload_pb2.InferResponse(frame_id=req.frame_id)
                if how != "ok":
                    resp.error.code = grpc.StatusCode[how].value[0]
                yield resp


def _until(what: Any) -> None:
    deadline = time.monotonic() + 5.0
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_frames_a_replica_held_unanswered_are_counted_against_it() -> None:
    """A hung replica (SIGSTOP) answers nothing more: its drones' windows stay full (skipped) and
    its frames end unanswered, and the report showed only its share of the answers, which looked
    normal. Each frame not answered is now counted against the replica whose stream held it."""
    from splitpoint.loadtest import LoadtestConfig, _Drone, _Tally
    from splitpoint.v1 import offload_pb2

    conf = LoadtestConfig(bundle="b", target="127.0.0.1:1", insecure=True, window=1, stream_frames=0)
    tally = _Tally()
    drone = _Drone(0, conf, conf.security, [offload_pb2.InferRequest(split=0)], tally)
    calls = iter([("replica-a", {0: "RESOURCE_EXHAUSTED", 1: "ok", 2: "lose"}), ("replica-b", {})])

    def infer(requests: Any, metadata: Any = None) -> _ScriptedCall:
        replica, script = next(calls)
        return _ScriptedCall(replica, script, requests)

    drone.stub = SimpleNamespace(Infer=infer)  # type: ignore[assignment]
    drone.start()
    assert drone.ready.wait(5.0)
    for _ in range(3):  # refused, answered, lost with its stream
        drone.tick()
        _until(lambda: drone.outstanding() == 0)
    _until(lambda: drone._replica == "replica-b")  # the next stream, on the hung replica
    for _ in range(4):  # one sent, three skipped: the window holds replica-b's unanswered frame
        drone.tick()
    assert drone.stop() == 1
    drone.close(time.monotonic() + 5.0)
    assert dict(tally.replicas) == {"replica-a": 1}
    assert {r: dict(c) for r, c in tally.held.items()} == {"replica-a": {"refused": 1, "lost": 1},
                                                          "replica-b": {"skipped": 3, "unanswered": 1}}
    assert tally.skipped == 3 and dict(tally.stream_failures) == {"UNAVAILABLE": 1}


def test_the_report_says_what_each_replica_held_unanswered() -> None:
    report = LoadReport(config={}, seconds=5.0, connected=2, sent=60, answered=50, skipped=40, unanswered=2,
                        replicas={"a:1": 25, "b:1": 25}, per_agent_answered=[25, 25],
                        held={"b:1": {"unanswered": 2, "skipped": 40}, "?": {"lost": 1}})
    lines = report.text().splitlines()
    assert "replica a:1: 25 frames (50.0%)" in lines
    assert "replica b:1: 25 frames (50.0%); not answered: 2 unanswered, 40 skipped" in lines, lines
    assert "replica ?: 0 frames (0.0%); not answered: 1 lost" in lines, lines
    assert report.to_dict()["held"]["b:1"] == {"unanswered": 2, "skipped": 40}
