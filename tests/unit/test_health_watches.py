"""The server's health Watches: what a closed Watch leaves behind."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2

from cloud_server.health import DrainingHealthServicer


class FakeContext:
    """A Watch call's context: the close callback is run by the test (the call ending)."""

    def __init__(self) -> None:
        self.on_close: list[Any] = []

    def add_callback(self, callback: Any) -> bool:
        self.on_close.append(callback)
        return True


def test_closed_watches_of_any_service_name_leave_nothing_behind() -> None:
    """The service name is the client's to choose: each name ever watched kept an empty set in
    the servicer for the server's life, so a client looping over names grew it without end."""
    servicer = DrainingHealthServicer()
    sent: list[Any] = []
    contexts = []
    for i in range(1000):
        context = FakeContext()
        servicer.Watch(health_pb2.HealthCheckRequest(service=f"name-{i}"), context, sent.append)
        contexts.append(context)
    servicer.Watch(health_pb2.HealthCheckRequest(service=""), FakeContext(), sent.append)  # one stays open
    for context in contexts:
        for close in context.on_close:
            close()
    assert list(servicer._watches) == [""] and len(servicer._watches[""]) == 1
    assert sent.count(None) == 1000  # each closed Watch ended once
