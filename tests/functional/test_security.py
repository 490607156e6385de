"""TLS, mutual TLS and bearer tokens on a real server; plaintext only when asked; no secrets in logs."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import running_server

from cloud_server.config import CloudConfig
from cloud_server.server import CloudServer
from edge_node.client import OffloadClient
from splitpoint.certs import make_dev_certs
from splitpoint.cli import main
from splitpoint.errors import ConfigError, RemoteError
from splitpoint.security import ClientSecurity

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    return make_dev_certs(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


def start(bundle: Path, **kw: object) -> CloudServer:
    conf = CloudConfig(bundle=str(bundle), listen="127.0.0.1:0", grace_s=1.0, **kw)  # type: ignore[arg-type]
    conf.validate()
    return CloudServer(conf).start()


def test_tls_and_mutual_tls(digits_bundle: Path, certs) -> None:
    server = start(digits_bundle, insecure=False, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                   tls_client_ca=str(certs.ca_cert))
    try:
        good = OffloadClient(server.address, security=ClientSecurity(
            tls_ca=str(certs.ca_cert), tls_cert=str(certs.client_cert), tls_key=str(certs.client_key)))
        assert good.describe().model_name == "digits-cnn"
        good.close()
        # no client certificate: the handshake fails
        anon = OffloadClient(server.address, timeout_s=3, security=ClientSecurity(tls_ca=str(certs.ca_cert)))
        with pytest.raises(RemoteError) as info:
            anon.describe()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        anon.close()
        # plaintext against a TLS server fails too
        plain = OffloadClient(server.address, timeout_s=3, security=ClientSecurity(insecure=True))
        with pytest.raises(RemoteError):
            plain.describe()
        plain.close()
    finally:
        server.stop()


def test_bearer_token_is_checked_and_never_logged(digits_bundle: Path, certs, token_file: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = start(digits_bundle, insecure=False, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                   token_file=str(token_file))
    try:
        sec = dict(tls_ca=str(certs.ca_cert))
        with_token = OffloadClient(server.address, security=ClientSecurity(**sec, token_file=str(token_file)))
        assert with_token.describe().model_digest
        assert with_token.probe(10, 10)[1].received_bytes == 10
        with_token.close()
        without = OffloadClient(server.address, security=ClientSecurity(**sec))
        with pytest.raises(RemoteError) as info:
            without.describe()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        without.close()
        wrong_file = tmp_path / "wrong"
        wrong_file.write_text("not-the-token-but-long-enough\n")
        wrong = OffloadClient(server.address, security=ClientSecurity(**sec, token_file=str(wrong_file)))
        with pytest.raises(RemoteError) as info:
            wrong.describe()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        # a stream without the token is refused too
        stream_err: list[RemoteError | None] = []
        s = wrong.open_stream(30, lambda *_: None, lambda _s, e: stream_err.append(e))
        s.close()
        assert s.ended.wait(10)
        assert stream_err and stream_err[0] is not None and stream_err[0].code == grpc.StatusCode.UNAUTHENTICATED
        wrong.close()
        # health checks stay open for load balancers
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca_cert.read_bytes())
        with grpc.secure_channel(server.address, creds) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged
    assert "not-the-token" not in logged


def test_plaintext_needs_an_explicit_insecure_and_warns(digits_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as info:
        CloudConfig(bundle=str(digits_bundle), insecure=False).validate()
    assert info.value.key == "insecure" and "tls_cert" in str(info.value)
    caplog.set_level(logging.WARNING)
    server = start(digits_bundle, insecure=True)
    server.stop()
    assert any("PLAINTEXT" in r.getMessage() for r in caplog.records)


def test_bad_tls_settings_are_named(digits_bundle: Path, certs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_key"):
        CloudConfig(bundle=str(digits_bundle), insecure=False, tls_cert=str(certs.server_cert)).validate()
    with pytest.raises(ConfigError, match="insecure"):
        CloudConfig(bundle=str(digits_bundle), insecure=True, tls_cert=str(certs.server_cert),
                    tls_key=str(certs.server_key)).validate()
    with pytest.raises(ConfigError) as info:
        start(digits_bundle, insecure=False, tls_cert=str(tmp_path / "nope.pem"), tls_key=str(certs.server_key))
    assert info.value.key == "tls_cert" and "not found" in str(info.value)
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        start(digits_bundle, insecure=True, token_file=str(short), allow_plaintext_token=True)


def test_unusable_certificate_files_are_named_before_the_tails_load(certs, tmp_path: Path) -> None:
    """gRPC said only 'Failed to bind' (a traceback, exit 1) for a key of another certificate, a
    garbage file or a key given as the CA; an agent with a bad CA failed every handshake."""
    other = make_dev_certs(tmp_path / "other", ["localhost"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    placeholder = tmp_path / "placeholder.pem"  # as deploy/kubernetes/examples/secret.yaml has it
    placeholder.write_text("-----BEGIN CERTIFICATE-----\n(the server certificate, PEM)\n-----END CERTIFICATE-----\n")
    server = {"tls_cert": str(certs.server_cert), "tls_key": str(certs.server_key)}
    cases = [
        ({**server, "tls_key": str(other.server_key)}, "tls_key", "is not the private key of tls_cert"),
        ({**server, "tls_cert": str(garbage)}, "tls_cert", "not a PEM certificate"),
        ({**server, "tls_cert": str(placeholder)}, "tls_cert", "OpenSSL cannot read the certificate"),
        ({**server, "tls_key": str(garbage)}, "tls_key", "not a PEM private key"),
        ({**server, "tls_client_ca": str(certs.ca_key)}, "tls_client_ca", "holds no PEM certificate"),
    ]
    for settings, key, said in cases:
        with pytest.raises(ConfigError) as info:  # from the constructor, before any tail is loaded
            CloudServer(CloudConfig(bundle=str(tmp_path / "no-bundle-needed"), listen="127.0.0.1:0", **settings))
        assert info.value.key == key and said in str(info.value), (settings, str(info.value))
    client = ClientSecurity(tls_ca=str(garbage))
    with pytest.raises(ConfigError, match="tls_ca .*holds no PEM certificate"):
        client.channel("127.0.0.1:1", [])
    # a leaf (CA:FALSE) as the CA was accepted, and every client (or server) was then refused without a word
    with pytest.raises(ConfigError) as leaf:
        CloudServer(CloudConfig(bundle=str(tmp_path / "no-bundle-needed"), listen="127.0.0.1:0", **server,
                                tls_client_ca=str(certs.client_cert)))
    assert leaf.value.key == "tls_client_ca" and "holds no CA certificate (basicConstraints CA:TRUE)" in str(leaf.value)
    with pytest.raises(ConfigError, match=r"tls_ca .*holds no CA certificate \(basicConstraints CA:TRUE\)"):
        ClientSecurity(tls_ca=str(certs.server_cert)).check_files()
    both = tmp_path / "leaf-and-ca.pem"  # a bundle with the CA among leaves is fine
    both.write_bytes(certs.client_cert.read_bytes() + certs.ca_cert.read_bytes())
    ClientSecurity(tls_ca=str(both)).check_files()
    mtls = ClientSecurity(tls_ca=str(certs.ca_cert), tls_cert=str(certs.client_cert), tls_key=str(other.client_key))
    with pytest.raises(ConfigError, match="tls_key .*is not the private key of tls_cert"):
        mtls.check_files()


def test_a_listen_address_that_cannot_be_bound_is_one_line(digits_bundle: Path, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = subprocess.run([sys.executable, "-m", "splitpoint", "cloud", "--bundle", str(digits_bundle), "--listen",
                               listen, "--insecure"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    # the system's reason, taken from gRPC's native line, which is not printed above ours
    assert f'splitpoint cloud: error: listen = "{listen}": cannot bind (Address already in use)' in proc.stderr
    assert "add_port" not in proc.stderr and "Failed to add port" not in proc.stderr, proc.stderr


def test_a_metrics_port_in_use_stops_the_server_before_it_serves(digits_bundle: Path) -> None:
    """metrics_listen was bound after the server had started serving (health SERVING, frames
    taken), which then ended with exit 1 - at every systemd restart. Now every port is bound first:
    the server never serves: nothing is answered on its listen port."""
    import socket

    from splitpoint.errors import SplitpointError

    with socket.socket() as taken, socket.socket() as probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = CloudServer(CloudConfig(bundle=str(digits_bundle), listen=f"127.0.0.1:{port}", insecure=True,
                                         metrics_listen=f"127.0.0.1:{taken.getsockname()[1]}"))
        with pytest.raises(SplitpointError, match="metrics_listen = .*: cannot listen there: Address already in use"):
            server.start()
    server.executor.close(timeout=0)
    assert server.port is None
    client = OffloadClient(f"127.0.0.1:{port}", timeout_s=2.0, security=ClientSecurity(insecure=True))
    try:
        with pytest.raises(RemoteError):  # it answered Describe (and took frames) before
            client.describe()
    finally:
        client.close()


def test_a_health_port_another_server_holds_is_not_shared(digits_bundle: Path) -> None:
    """The health server was built without ("grpc.so_reuseport", 0), which the listen port has:
    gRPC's default SO_REUSEPORT let a second server bind the same health_listen port, and probes
    were answered by either process - a dead server's probe read SERVING. Now the second bind is
    refused, with the line (and exit 1) any port in use gets (docs/configuration.md)."""
    from splitpoint.errors import SplitpointError

    with running_server(digits_bundle, health_listen="127.0.0.1:0") as first:
        health = f"127.0.0.1:{first.health_port}"
        second = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True,
                                         health_listen=health))
        try:
            with pytest.raises(SplitpointError) as info:
                second.start()
        finally:
            second.executor.close(timeout=0)
        assert str(info.value) == f'health_listen = "{health}": cannot bind (Address already in use)'
        assert second.port is None and second._health_server is None
        with grpc.insecure_channel(health) as channel:  # the port is still the first server's alone
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c"
    assert main(["certs", "-o", str(out), "--server-name", "drone-server.local,10.0.0.5"]) == 0
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    assert main(["certs", "-o", str(out)]) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["certs", "-o", str(out), "--force"]) == 0


def test_agent_over_mutual_tls_with_a_token(digits_bundle: Path, certs, token_file: Path, tmp_path: Path) -> None:
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.results import read_results
    from edge_node.source_spec import open_source

    # an agent that may offload (here k = 3) chooses TLS or plaintext; one all on the edge need not
    # (tests/functional/test_edge_without_a_link.py)
    with pytest.raises(ConfigError) as info:
        EdgeAgent.from_config(EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", split=3))
    assert info.value.key == "insecure" and "tls_ca" in str(info.value)
    server = start(digits_bundle, insecure=False, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                   tls_client_ca=str(certs.ca_cert), token_file=str(token_file))
    try:
        conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:5", cloud=server.address, split=3,
                          results=str(tmp_path / "r.jsonl"), tls_ca=str(certs.ca_cert), tls_cert=str(certs.client_cert),
                          tls_key=str(certs.client_key), token_file=str(token_file))
        conf.validate()
        agent = EdgeAgent.from_config(conf)
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
            agent.run(source)
        records = read_results(tmp_path / "r.jsonl")
        assert len(records) == 5 and all(r["where"] == "cloud" for r in records)
    finally:
        server.stop()


def test_an_agent_whose_token_is_refused_says_so(digits_bundle: Path, certs, token_file: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # it said "not reachable" at start and "never reached the cloud server ... (check --cloud and that
    # the server is running)" at the end: a server that was reached, and refused the token
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.results import read_results
    from edge_node.source_spec import open_source

    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-but-long-enough\n")
    wrong.chmod(0o600)
    server = start(digits_bundle, insecure=False, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                   token_file=str(token_file))
    try:
        conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:3", cloud=server.address, split=3,
                          results=str(tmp_path / "r.jsonl"), tls_ca=str(certs.ca_cert), token_file=str(wrong))
        conf.validate()
        agent = EdgeAgent.from_config(conf)
        with caplog.at_level(logging.WARNING, logger="edge_node.agent"), \
                open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
            summary = agent.run(source)
    finally:
        server.stop()
    assert summary.local == 3
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"cloud {server.address} refused this agent (UNAUTHENTICATED") and
               "token_file must hold the token the server expects" in m for m in said), said
    end = [m for m in said if "frames ran locally on the edge" in m]
    assert len(end) == 1 and end[0].startswith(f"the cloud server at {server.address} refused this agent"), said
    assert "token_file must hold the token" in end[0] and "never reached" not in end[0]
    assert "not-the-token" not in " ".join(said)
    # the records say so too: a frame sent on a refused stream, or one run during the backoff after it
    reasons = [r["fallback_reason"] for r in read_results(tmp_path / "r.jsonl")]
    assert reasons and all("UNAUTHENTICATED" in why and "unreachable" not in why for why in reasons), reasons


def test_tokens_rotate_without_a_restart(digits_bundle: Path, certs, token_file: Path, tmp_path: Path) -> None:
    """Each side read its token file once, at start: rotating a fleet's token meant restarting the
    server and every drone, and refused frames between the two. Now the server accepts every line
    of its file and both sides read their file again at the next call after it changed."""
    def replace(path: Path, text: str) -> None:  # as Kubernetes and most tools do: a new file renamed over
        new = path.with_name(path.name + ".new")
        new.write_text(text)
        new.chmod(0o600)
        new.replace(path)

    new_token = "n3w-token-0123456789abcdefghij"
    drone, old_drone = tmp_path / "drone-token", tmp_path / "old-drone-token"
    replace(drone, new_token + "\n")
    replace(old_drone, TOKEN + "\n")  # a drone not yet given the new token
    server = start(digits_bundle, insecure=False, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                   token_file=str(token_file))
    old_client = OffloadClient(server.address, timeout_s=3, security=ClientSecurity(tls_ca=str(certs.ca_cert),
                                                                                     token_file=str(old_drone)))
    new_client = OffloadClient(server.address, timeout_s=3, security=ClientSecurity(tls_ca=str(certs.ca_cert),
                                                                                     token_file=str(drone)))
    try:
        with pytest.raises(RemoteError) as info:
            new_client.describe()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        replace(token_file, f"{TOKEN}\n{new_token}\n")  # 1. the server accepts both
        assert new_client.describe().model_digest and old_client.describe().model_digest
        replace(drone, "0ther-token-0123456789abcdefgh\n")  # a drone given a token the server does not hold
        with pytest.raises(RemoteError) as info:
            new_client.describe()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        replace(drone, new_token + "\n")  # 2. the drone has the new one
        assert new_client.describe().model_digest
        replace(token_file, f"{new_token}\n")  # 3. the old one retired
        with pytest.raises(RemoteError) as info:
            old_client.describe()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        replace(token_file, "")  # emptied by mistake: the tokens read before stay, no one locked out
        assert new_client.describe().model_digest
    finally:
        old_client.close()
        new_client.close()
        server.stop()


def test_a_renewed_server_certificate_is_served_without_a_restart(digits_bundle: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The server read its certificate once: one renewed (cert-manager, a new `splitpoint certs`)
    was served only after a restart. Now every new connection gets the files as they are, and a
    set written half-way is never served."""
    import shutil

    from splitpoint import certs as dev_certs
    from splitpoint.cert_validity import not_after

    old = make_dev_certs(tmp_path / "old", ["localhost", "127.0.0.1"])
    monkeypatch.setattr(dev_certs, "VALID_DAYS", 200)  # ends on another day: the metrics tell the two apart
    new = make_dev_certs(tmp_path / "new", ["localhost", "127.0.0.1"])  # another CA: tells the two apart
    served = tmp_path / "served"
    served.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(old.ca_cert.parent / name, served / name)

    def install(src: Path, name: str) -> None:  # a new file renamed over the served one
        shutil.copy(src, served / f".{name}.new")
        (served / f".{name}.new").replace(served / name)

    def describes(ca: Path) -> bool:
        client = OffloadClient(server.address, timeout_s=3, security=ClientSecurity(tls_ca=str(ca)))
        try:
            return bool(client.describe().model_digest)
        except RemoteError as err:
            assert err.code == grpc.StatusCode.UNAVAILABLE, err
            return False
        finally:
            client.close()

    server = start(digits_bundle, insecure=False, tls_cert=str(served / "server.pem"),
                   tls_key=str(served / "server.key"))
    try:
        assert server.registry.get_sample_value("splitpoint_cloud_certificate_expiry_timestamp_seconds",
                                                {"file": "tls_cert"}) == not_after(str(old.server_cert)).timestamp()
        assert describes(old.ca_cert) and not describes(new.ca_cert)
        with caplog.at_level(logging.WARNING, logger="splitpoint.security"):
            install(new.server_cert, "server.pem")  # the certificate first, its key not yet: not served
            assert describes(old.ca_cert) and not describes(new.ca_cert)
        assert any("TLS files changed and cannot be used" in r.getMessage() and "is not the private key" in
                   r.getMessage() for r in caplog.records), caplog.text
        install(new.server_key, "server.key")
        assert describes(new.ca_cert) and not describes(old.ca_cert)
        # the metrics say when the certificate served now ends: monitoring warns before clients are refused
        ends = server.registry.get_sample_value("splitpoint_cloud_certificate_expiry_timestamp_seconds",
                                                {"file": "tls_cert"})
        assert ends == not_after(str(new.server_cert)).timestamp() != not_after(str(old.server_cert)).timestamp()
    finally:
        server.stop()


def test_a_renewed_client_certificate_is_used_without_a_restart(digits_bundle: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The agent read its tls_cert and tls_key once, at start: a drone whose certificate was
    renewed (or replaced after it expired) was refused until it restarted. Now a new call after
    the files changed builds its channel with them, and a set written half-way is never used."""
    import shutil

    site = make_dev_certs(tmp_path / "site", ["localhost", "127.0.0.1"])
    other = make_dev_certs(tmp_path / "other", ["localhost", "127.0.0.1"])  # a CA the server does not trust
    mine = tmp_path / "drone"
    mine.mkdir()
    shutil.copy(other.client_cert, mine / "client.pem")
    shutil.copy(other.client_key, mine / "client.key")

    def install(src: Path, name: str) -> None:  # a new file renamed over the one in use
        shutil.copy(src, mine / f".{name}.new")
        (mine / f".{name}.new").replace(mine / name)

    server = start(digits_bundle, insecure=False, tls_cert=str(site.server_cert), tls_key=str(site.server_key),
                   tls_client_ca=str(site.ca_cert))
    client = OffloadClient(server.address, timeout_s=3, security=ClientSecurity(
        tls_ca=str(site.ca_cert), tls_cert=str(mine / "client.pem"), tls_key=str(mine / "client.key")))
    try:
        with pytest.raises(RemoteError) as info:
            client.describe()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE  # the server's handshake refuses it
        with caplog.at_level(logging.INFO, logger="splitpoint.security"):
            install(site.client_cert, "client.pem")  # the certificate renewed, its key not yet
            with pytest.raises(RemoteError):
                client.describe()
            assert client.channels.renewals == 0
            assert any("TLS files changed and cannot be used" in r.getMessage() and "client.key" in r.getMessage()
                       for r in caplog.records), caplog.text
            install(site.client_key, "client.key")
            assert client.describe().model_digest  # the same client, no restart
            assert client.channels.renewals == 1
            assert any("TLS files read again" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        client.close()
        server.stop()


def test_a_list_of_servers_over_tls_needs_the_name_to_verify(digits_bundle: Path, certs, tmp_path: Path) -> None:
    """gRPC verifies one name for every address of a list (ipv4:A,B), by default the whole list,
    which no certificate holds: every handshake failed, every frame ran locally, exit 0. Now the
    agent (and loadtest) stop at start naming tls_server_name; with it, the list serves."""
    from edge_node.agent import EdgeAgent
    from edge_node.config import EdgeConfig
    from edge_node.results import read_results
    from edge_node.source_spec import open_source
    from splitpoint.loadtest import LoadtestConfig

    tls = {"tls_ca": str(certs.ca_cert), "tls_cert": str(certs.client_cert), "tls_key": str(certs.client_key)}
    servers = [start(digits_bundle, insecure=False, tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                     tls_client_ca=str(certs.ca_cert)) for _ in range(2)]
    try:
        listed = ",".join(s.address for s in servers)
        for conf in (EdgeConfig(bundle=str(digits_bundle), source="synthetic:4", cloud=listed, split=3, **tls),
                     LoadtestConfig(bundle=str(digits_bundle), target=listed, split=3, **tls)):
            with pytest.raises(ConfigError) as info:
                conf.validate()
            assert info.value.key in ("cloud", "target") and "set tls_server_name" in str(info.value)
        conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:4", cloud=listed, split=3,
                          results=str(tmp_path / "r.jsonl"), tls_server_name="localhost", **tls)
        conf.validate()
        agent = EdgeAgent.from_config(conf)
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle) as source:
            agent.run(source)
        records = read_results(tmp_path / "r.jsonl")
        assert [r["where"] for r in records] == ["cloud"] * 4
        assert {r["replica"] for r in records} <= {s.address for s in servers}
    finally:
        for s in servers:
            s.stop()


def test_a_pinned_self_signed_certificate_is_a_ca_file_as_grpc_takes_it(tmp_path: Path) -> None:
    """A server's own self-signed certificate (basicConstraints CA:FALSE) given to the agent as tls_ca:
    gRPC verifies the server against it, so the check that refuses leaf-only CA files must not."""
    import datetime
    import ipaddress
    from concurrent import futures

    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "pinned.pem").write_bytes(pem)
    ClientSecurity(tls_ca=str(tmp_path / "pinned.pem")).check_files()
    server = grpc.server(futures.ThreadPoolExecutor(1))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, pem)]))
    server.start()
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=pem)) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)
