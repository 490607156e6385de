"""How a server names itself to agents: every pod of deployment.yaml listens on 0.0.0.0:50051,
and each named itself "0.0.0.0:50051" - the records' `replica` and loadtest's per-replica share
(docs/scaling.md, "Check the spread") put a whole fleet under one name."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from cloud_server.server import CloudServer, replica_name
from splitpoint.config import format_address, parse_address


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051"])
def test_a_server_on_every_interface_is_named_by_its_host(listen: str) -> None:
    assert replica_name(listen, 50051) == f"{socket.gethostname()}:50051"


@pytest.mark.parametrize(("listen", "name"), [("127.0.0.1:0", "127.0.0.1:41234"), ("10.0.0.5:50051", "10.0.0.5:41234"),
                                              ("cloud-a.example:50051", "cloud-a.example:41234"),
                                              ("[::1]:0", "[::1]:41234"), ("[fd00::5]:50051", "[fd00::5]:41234")])
def test_a_server_on_one_address_is_named_by_it_and_the_port_it_bound(listen: str, name: str) -> None:
    assert replica_name(listen, 41234) == name


@pytest.mark.parametrize("listen", ["[::1]:0", "127.0.0.1:0", "[fd00::5]:50051"])
def test_the_address_a_server_says_it_listens_on_can_be_given_back_as_cloud(listen: str) -> None:
    """"listening on ::1:50051" (an IPv6 address without brackets) was no value --cloud accepts."""
    server = SimpleNamespace(config=SimpleNamespace(listen=listen), port=41234)  # bound: its port known
    address = CloudServer.address.fget(server)  # type: ignore[attr-defined]
    host, port = parse_address("cloud", address)
    assert (format_address(host, port), port) == (address, 41234)
    assert parse_address("listen", listen)[0] == host
