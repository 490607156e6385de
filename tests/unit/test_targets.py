"""gRPC targets: one server, a list balanced with round_robin, gRPC's own forms; bad ones named."""

from __future__ import annotations

import json

import pytest

from splitpoint.errors import ConfigError
from splitpoint.targets import balanced_options, parse_target

pytestmark = pytest.mark.edge_side


@pytest.mark.parametrize(("text", "target"), [
    ("127.0.0.1:50051", "127.0.0.1:50051"),
    ("10.0.0.1:1, 10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
    ("[::1]:1,[::2]:2", "ipv6:[::1]:1,[::2]:2"),
    ("dns:///splitpoint-cloud.drones.svc.cluster.local:50051", "dns:///splitpoint-cloud.drones.svc.cluster.local:50051"),
    ("ipv4:127.0.0.1:1,127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
    ("dns://8.8.8.8/name:5", "dns://8.8.8.8/name:5"),
    ("dns:name:5", "dns:name:5"),
    ("unix:/run/splitpoint.sock", "unix:/run/splitpoint.sock"),
])
def test_targets(text: str, target: str) -> None:
    assert parse_target("cloud", text) == target


@pytest.mark.parametrize("text", ["", "nohostport", "a:1,b", "dns:///name:99999", "[::1]:1,10.0.0.1:2", "h:0",
                                  # each once passed, and every frame then fell back to a local run
                                  "http://127.0.0.1:5", "a b:5", "127.0.0.1:5:7", "::1:5", "10.0.0.1:1,-x:2",
                                  # gRPC took these, then dialled port 443 or timed every connection out
                                  "dns:///", "dns:", "dns:///name", "dns://8.8.8.8/name", "ipv4:", "unix:",
                                  # gRPC refused these channels, and the agent ran every frame locally, exit 0
                                  "ipv4:127.0.0.1:1,ipv4:127.0.0.2:2", "ipv4:127.0.0.1:1,,127.0.0.2:2",
                                  "ipv6:[::1]:1,ipv4:127.0.0.1:2"])
def test_bad_targets_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_target("cloud", text)
    assert info.value.key == "cloud"


@pytest.mark.parametrize("text", ["a:50051,b:50051", "localhost:1,127.0.0.1:2", "server.example:50051,10.0.0.2:50051"])
def test_a_list_of_names_is_refused_with_what_to_give(text: str) -> None:
    """gRPC's address list (ipv4:A,B) does not resolve names: `cloud = "a:50051,b:50051"` was taken,
    the channel then failed to build ("the target uri is not valid"), every frame ran locally and
    the agent exited 0."""
    with pytest.raises(ConfigError) as info:
        parse_target("cloud", text)
    assert info.value.key == "cloud"
    assert "is a name" in str(info.value) and "dns:///NAME:PORT" in str(info.value)


def test_balanced_options_ask_for_round_robin_and_health_checks() -> None:
    opts = dict(balanced_options(1024, own_connection=True))
    config = json.loads(opts["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    assert opts["grpc.use_local_subchannel_pool"] == 1 and opts["grpc.max_send_message_length"] == 1024
    assert "grpc.use_local_subchannel_pool" not in dict(balanced_options(1024))
