"""How a server names itself to agents: every pod of deployment.yaml listens on 0.0.0.0:50051,
and each named itself "0.0.0.0:50051" - the records' `replica` and loadtest's per-replica share
(docs/scaling.md, "Check the spread") put a whole fleet under one name."""

from __future__ import annotations

import socket

import pytest

from cloud_server.server import replica_name


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051"])
def test_a_server_on_every_interface_is_named_by_its_host(listen: str) -> None:
    assert replica_name(listen, 50051) == f"{socket.gethostname()}:50051"


@pytest.mark.parametrize(("listen", "name"), [("127.0.0.1:0", "127.0.0.1:41234"), ("10.0.0.5:50051", "10.0.0.5:41234"),
                                              ("cloud-a.example:50051", "cloud-a.example:41234")])
def test_a_server_on_one_address_is_named_by_it_and_the_port_it_bound(listen: str, name: str) -> None:
    assert replica_name(listen, 41234) == name
