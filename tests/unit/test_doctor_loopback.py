"""doctor's "plaintext to a non-loopback address" warning reads the cloud address as the agent does.

An address list was read as one host name, so doctor warned about plaintext to the loopback
server it had just reached. A list with an empty item (`,127.0.0.1:P`) the agent refuses, as it
does no address at all."""

from __future__ import annotations

import pytest

from splitpoint.doctor_cloud import _is_loopback


@pytest.mark.parametrize("address", ["127.0.0.1:5", "localhost:5", "[::1]:5", "ipv6:[::1]:5",
                                     "ipv4:127.0.0.1:5,127.0.0.2:6", "127.0.0.1:5,127.0.0.3:5", "dns:///localhost:5"])
def test_loopback_servers_are_loopback(address: str) -> None:
    assert _is_loopback(address)


@pytest.mark.parametrize("address", ["10.0.0.1:5", "127.0.0.1:5,10.0.0.1:5", "dns:///cloud:5", "cloud.example:5",
                                     "ipv4:127.0.0.1:1,", ",127.0.0.1:5", "not an address"])
def test_anything_else_is_not(address: str) -> None:
    assert not _is_loopback(address)
