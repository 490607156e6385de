"""A client certificate per drone: `splitpoint certs --clients` and `splitpoint loadtest --tls-client-dir`.

Under mutual TLS the server knows an agent by its client certificate's common name and holds
each to `max_streams_per_agent`. `certs` made one client certificate, so a fleet given it was
one agent: with the limit at 1, one drone of five got a stream. Real TLS, a real server on port 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import running_server

from splitpoint.cli import main
from splitpoint.errors import ConfigError
from splitpoint.loadtest import LoadtestConfig, run_loadtest

DRONES = [f"drone-0{i}" for i in range(1, 6)]


def common_name(pem: Path) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def mtls_server(bundle: Path, out: Path, per_agent: int = 1):  # type: ignore[no-untyped-def]
    return running_server(bundle, insecure=False, tls_cert=str(out / "server.pem"), tls_key=str(out / "server.key"),
                          tls_client_ca=str(out / "ca.pem"), max_streams_per_agent=per_agent, grace_s=1.0)


def fleet(bundle: Path, address: str, out: Path, **security: str) -> LoadtestConfig:
    # one stream per drone (stream_frames 0): a replaced stream could meet its predecessor's
    # admission; drones refused wait only until timeout_s before the clock starts
    return LoadtestConfig(bundle=str(bundle), target=address, agents=len(DRONES), fps=5.0, duration=1.0,
                          stream_frames=0, timeout_s=3.0, tls_ca=str(out / "ca.pem"), **security)


def test_each_drone_certificate_is_its_own_agent_and_a_second_run_keeps_the_ca(
        digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "-o", str(out), "--clients", ",".join(DRONES[:4])]) == 0
    first = {p.name: p.read_bytes() for p in (out / "ca.pem", out / "server.pem", out / "clients" / "drone-01.pem")}
    capsys.readouterr()
    # one more drone later: signed by the CA already there, which stays (so do the deployed certificates)
    assert main(["certs", "-o", str(out), "--clients", DRONES[4]]) == 0
    said = capsys.readouterr().out
    assert f"reused the CA in {out / 'ca.pem'}: certificates it signed before stay valid" in said
    assert {p.name: p.read_bytes() for p in (out / "ca.pem", out / "server.pem",
                                             out / "clients" / "drone-01.pem")} == first
    assert sorted(p.name for p in (out / "clients").iterdir()) == sorted(f"{n}.{x}" for n in DRONES
                                                                         for x in ("key", "pem"))
    for n in DRONES:
        assert common_name(out / "clients" / f"{n}.pem") == n
        assert (out / "clients" / f"{n}.key").stat().st_mode & 0o777 == 0o600
    assert not (out / "client.pem").exists()  # the shared certificate is what --clients is instead of

    with mtls_server(digits_bundle, out, per_agent=1) as server:
        own = run_loadtest(fleet(digits_bundle, server.address, out, tls_client_dir=str(out / "clients")))
        assert own.connected == 5 and own.certificates == 5, own.text()
        assert min(own.per_agent_answered) >= 1, own.text()
        assert "client certificate" not in own.text()
        shared = run_loadtest(fleet(digits_bundle, server.address, out, tls_cert=str(out / "clients" / "drone-01.pem"),
                                    tls_key=str(out / "clients" / "drone-01.key")))
        assert shared.connected == 1, shared.text()
        assert "max_streams_per_agent" in shared.last_error
        assert "5 drones presented 1 client certificate: drones sharing one are one agent" in shared.text()


def test_loadtest_command_with_a_directory_of_fewer_certificates_than_drones(
        digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "-o", str(out), "--clients", "a,b,c"]) == 0
    capsys.readouterr()
    with mtls_server(digits_bundle, out, per_agent=2) as server:
        assert main(["loadtest", "--bundle", str(digits_bundle), "--target", server.address, "--agents", "4",
                     "--fps", "5", "--duration", "1", "--stream-frames", "0", "--timeout-s", "3",
                     "--tls-ca", str(out / "ca.pem"), "--tls-client-dir", str(out / "clients")]) == 0
    said = capsys.readouterr().out
    assert said.startswith("4 drones for "), said
    assert "only" not in said  # drones 1 and 4 share a's certificate: two streams, within the limit
    assert "4 drones presented 3 client certificates: drones sharing one are one agent" in said


@pytest.mark.parametrize("names, said", [
    ("drone-01,,drone-02", '--clients = "drone-01,,drone-02": an empty name'),
    ("drone-01,drone-01", '--clients = "drone-01": given twice'),
    ("drone-A,drone-a", '--clients = "drone-a": differs from drone-A only in case'),
    ("../etc", '--clients = "../etc": not a drone name'),
    ("drone 1", '--clients = "drone 1": not a drone name'),
    ("-rf", '--clients = "-rf": not a drone name'),
    ("d" * 65, f'--clients = "{"d" * 65}": not a drone name'),
])
def test_bad_drone_names_are_named_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          names: str, said: str) -> None:
    assert main(["certs", "-o", str(tmp_path / "c"), f"--clients={names}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("splitpoint certs: error: " + said), err
    assert not (tmp_path / "c").exists()


def test_existing_drone_files_and_a_server_name_beside_a_kept_ca_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c"
    assert main(["certs", "-o", str(out), "--clients", "d1"]) == 0
    before = (out / "clients" / "d1.pem").read_bytes()
    assert main(["certs", "-o", str(out), "--clients", "d2,d1"]) == 2
    assert "clients/d1.pem exists; use --force to replace those drones' certificates (the CA is kept)" in \
        capsys.readouterr().err
    assert not (out / "clients" / "d2.pem").exists() and (out / "clients" / "d1.pem").read_bytes() == before
    assert main(["certs", "-o", str(out), "--clients", "d3", "--server-name", "other.example"]) == 2
    assert "has a CA already, which --clients keeps" in capsys.readouterr().err
    ca = (out / "ca.pem").read_bytes()
    assert main(["certs", "-o", str(out), "--clients", "d1", "--force"]) == 0
    assert (out / "clients" / "d1.pem").read_bytes() != before and (out / "ca.pem").read_bytes() == ca
    # --force without --clients makes a new CA: the drones' certificates no longer verify, and it says so
    assert main(["certs", "-o", str(out), "--force"]) == 0
    assert "1 drone certificates in" in capsys.readouterr().out
    (out / "ca.key").unlink()
    assert main(["certs", "-o", str(out), "--clients", "d4"]) == 2
    assert "ca.pem is there without ca.key" in capsys.readouterr().err


def test_tls_client_dir_is_checked_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c"
    assert main(["certs", "-o", str(out), "--clients", "d1,d2"]) == 0
    base = {"bundle": "b", "target": "127.0.0.1:1", "tls_ca": str(out / "ca.pem")}
    for extra, said in (({"tls_cert": str(out / "clients/d1.pem"), "tls_key": str(out / "clients/d1.key")},
                         "cannot be combined with tls_cert"),
                        ({"insecure": True, "tls_ca": ""}, "cannot be combined with insecure")):
        with pytest.raises(ConfigError, match=said):
            LoadtestConfig(**{**base, "tls_client_dir": str(out / "clients"), **extra}).validate()  # type: ignore[arg-type]
    (out / "clients" / "d2.key").unlink()
    for where, said in ((out / "clients", "d2.pem has no d2.key"), (out, "holds ca.pem: give its clients/"),
                        (tmp_path / "none", "directory not found")):
        with pytest.raises(ConfigError, match=said):
            LoadtestConfig(**base, tls_client_dir=str(where)).check_files()  # type: ignore[arg-type]


def test_an_agent_over_its_share_of_streams_is_told_it_was_refused_and_what_to_do(
        digits_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two drones given one certificate, the server holding each agent to one stream: the second
    drone's frames were recorded "cloud unreachable (waiting to reconnect)" (45 of 60 in a run of
    8 drones on one certificate) while the server answered it, and its warning said nothing of
    the certificate. Now its records say the cloud refused the stream, and the warning what to do."""
    import logging
    import time

    from edge_node.agent import EdgeAgent
    from edge_node.client import OffloadClient
    from edge_node.config import EdgeConfig
    from edge_node.results import read_results
    from edge_node.source_spec import open_source
    from splitpoint.security import ClientSecurity

    out = tmp_path / "certs"
    assert main(["certs", "-o", str(out), "--clients", "drone-01"]) == 0
    tls = {"tls_ca": str(out / "ca.pem"), "tls_cert": str(out / "clients" / "drone-01.pem"),
           "tls_key": str(out / "clients" / "drone-01.key")}
    with mtls_server(digits_bundle, out, per_agent=1) as server:
        first = OffloadClient(server.address, security=ClientSecurity(**tls))
        held = first.open_stream(60.0, lambda s, r: None, lambda s, e: None)  # the first drone's stream
        deadline = time.monotonic() + 10.0
        while server.servicer.admission.open_streams < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.servicer.admission.open_streams == 1
        try:
            conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:8", cloud=server.address, split=3,
                              fps=20.0, results=str(tmp_path / "r.jsonl"), grace_s=1.0, **tls)
            conf.validate()
            agent = EdgeAgent.from_config(conf)
            with caplog.at_level(logging.WARNING, logger="edge_node.agent"), \
                    open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
                agent.run(source)
        finally:
            held.cancel()
            first.close()
    records = read_results(tmp_path / "r.jsonl")
    assert sorted(r["frame_id"] for r in records) == list(range(8))
    assert all(r["where"] == "local" for r in records), records
    reasons = {r["fallback_reason"] for r in records}
    assert "cloud refused the stream (RESOURCE_EXHAUSTED) (waiting to retry)" in reasons, reasons
    assert not any("unreachable" in r for r in reasons), reasons
    warned = [r.getMessage() for r in caplog.records if "ended: RESOURCE_EXHAUSTED" in r.getMessage()]
    assert warned and "(max_streams_per_agent); every agent presenting this client certificate" in warned[0]
    assert "splitpoint certs --clients NAME" in warned[0]
