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


class _Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAUTHENTICATED

    def details(self) -> str:
        return "missing or invalid bearer token"


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
            raise _Refused()
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
