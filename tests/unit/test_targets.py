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
    ("dns:name:5", "dns:name:5"),
    (" 127.0.0.1:5 ", "127.0.0.1:5"),
    ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),  # one host, two servers
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
                                  "ipv6:[::1]:1,ipv4:127.0.0.1:2", "ipv4:[::1]:1"])
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


@pytest.mark.parametrize("key", ["cloud", "target"])
@pytest.mark.parametrize(("text", "said"), [
    # taken, and the server listed twice got twice the streams (73% against 27%)
    ("127.0.0.1:41001,127.0.0.1:41001,127.0.0.1:41002", "lists the server 127.0.0.1:41001 twice"),
    ("ipv4:127.0.0.1:1, 127.0.0.1:1", "lists the server 127.0.0.1:1 twice"),
    ("[::1]:1,[0::1]:1", "lists the server [::1]:1 twice (as [::1]:1 and [0::1]:1)"),
    # taken, an empty item dropped
    ("127.0.0.1:1,", "has an empty item"),
    (",127.0.0.1:1", "has an empty item"),
    ("127.0.0.1:1,,127.0.0.2:1", "has an empty item"),
    ("a:1,", "has an empty item"),
    # said `cloud = "127.0.0.1:41001,127.0.0.1:41002": '127.0.0.1:41001,127.0.0.1' is not a host name ...`
    ("dns:///127.0.0.1:41001,127.0.0.1:41002", "dns:/// takes one NAME:PORT"),
    ("dns:///:41001", "expected dns:///NAME:PORT"),  # said `cloud = ":41001": ...`
    ("dns:///name:99999", "name:99999: port 99999 is out of range"),
    ("127.0.0.1:1,127.0.0.1:0", "127.0.0.1:0: port 0 is out of range"),  # said `cloud = "127.0.0.1:0": ...`
    ("127.0.0.1:41001,127.0.0.1:41004x", "127.0.0.1:41004x: port '41004x' is not a number"),
    ("127.0.0.1:0", "port 0 is out of range"),
    # passed, then gRPC failed every stream ("Cannot parse authority"), recorded as refused by the cloud
    ("dns://8.8.8.8/localhost:41001", "names a DNS server (8.8.8.8)"),
    # passed, though no splitpoint server listens on a Unix socket
    ("unix:/run/splitpoint.sock", "a Unix socket is no server"),
])
def test_a_refused_target_is_quoted_as_written_under_its_key_with_the_bad_item_named(key: str, text: str,
                                                                                      said: str) -> None:
    """A server listed twice or an empty item was taken; other errors quoted a part of the value,
    not the value as written. Whatever key names the target (cloud, target), it is the one quoted."""
    with pytest.raises(ConfigError) as info:
        parse_target(key, text)
    assert str(info.value).startswith(f'{key} = "{text}": {said}'), info.value


@pytest.mark.parametrize(("text", "several"), [
    ("127.0.0.1:5", False), ("server.example:50051", False), ("ipv4:127.0.0.1:5", False),
    ("127.0.0.1:5,127.0.0.2:5", True), ("ipv6:[::1]:5,[::2]:5", True), ("dns:///splitpoint-cloud:50051", True),
])
def test_a_target_may_be_several_servers_when_a_list_or_a_name(text: str, several: bool) -> None:
    """The session sets a silent stream aside for another replica only where there may be one."""
    from splitpoint.targets import may_be_several

    assert may_be_several(parse_target("cloud", text)) is several
