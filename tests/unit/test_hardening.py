"""Hardening (issue 12, item 6) without a server: key file modes, the plaintext-token rule,
rate-limited refusal logs (injected clock), zlib data with trailing bytes."""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import ManualClock

from cloud_server.config import CloudConfig
from edge_node.config import EdgeConfig
from splitpoint.certs import make_client_certs, make_dev_certs
from splitpoint.cli import main
from splitpoint.codec import decode, encode
from splitpoint.config import build
from splitpoint.errors import ConfigError, TensorError
from splitpoint.ratelimited_log import OTHER_CLIENTS, RefusalLog, client_of
from splitpoint.security import ClientSecurity, ServerSecurity
from splitpoint.v1 import tensor_pb2

TOKEN = "s3cret-token-0123456789abcdef"
KEYS = ("ca.key", "server.key", "client.key")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


# ---------------------------------------------------------------- certs --force


@pytest.mark.parametrize("name", ["bad name!", "999.1.1.1", "-x.example", "a..b", "", "*"])
def test_certs_refuse_a_server_name_no_client_could_dial(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_dev_certs(tmp_path / "c", ["localhost", name] if name else ["localhost", "."])
    assert info.value.key == "--server-name"
    assert not (tmp_path / "c").exists()  # nothing written


def test_certs_accept_names_ips_and_a_wildcard(tmp_path: Path) -> None:
    make_dev_certs(tmp_path / "c", ["*.drones.local", "10.0.0.1", "::1", "my-host", "splitpoint-cloud.ns.svc"])


def test_certs_force_replaces_nothing_when_one_entry_is_not_a_file(tmp_path: Path) -> None:
    out = tmp_path / "c"
    make_dev_certs(out, ["localhost"])
    before = (out / "ca.pem").read_bytes()
    (out / "server.key").unlink()
    (out / "server.key").mkdir()
    with pytest.raises(ConfigError, match="server.key is not a file"):
        make_dev_certs(out, ["localhost"], force=True)
    assert (out / "ca.pem").read_bytes() == before  # the set stays one CA's
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        make_dev_certs(tmp_path / "f", ["localhost"])


def test_certs_force_on_a_full_disk_leaves_every_old_certificate_whole(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # certificates were written in place: a disk that filled midway left ca.pem or server.pem cut
    # off (a server reading it at start refuses it) beside a key that no longer matched anything
    out = tmp_path / "c"
    make_dev_certs(out, ["localhost"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    synced = []
    real_fsync = os.fsync

    def fills_at_the_fourth_file(fd: int) -> None:
        synced.append(fd)
        if len(synced) == 4:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_at_the_fourth_file)
    with pytest.raises(OSError, match="No space left"):
        make_dev_certs(out, ["localhost"], force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old set whole, no temporary file
    synced.clear()
    with pytest.raises(OSError, match="No space left"):  # and a fleet's drone certificates likewise
        make_client_certs(out, ["drone-01", "drone-02"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert list((out / "clients").iterdir()) == []


def test_certs_force_makes_world_readable_keys_0600(tmp_path: Path) -> None:
    out = tmp_path / "c"
    make_dev_certs(out, ["localhost"])
    old = {}
    for name in KEYS:
        (out / name).chmod(0o644)
        # a hard link keeps the old inode reachable: it shows whether the key was rewritten in place
        os.link(out / name, tmp_path / f"old-{name}")
        old[name] = (out / name).read_bytes()
    previous_umask = os.umask(0)  # the mode must not depend on a lax umask either
    try:
        assert main(["certs", "-o", str(out), "--server-name", "localhost", "--force"]) == 0
    finally:
        os.umask(previous_umask)
    for name in KEYS:
        assert (out / name).stat().st_mode & 0o777 == 0o600, name
        assert (out / name).read_bytes() != old[name]
        # replaced by rename: the old inode still holds the old key, untouched and never truncated
        assert (tmp_path / f"old-{name}").read_bytes() == old[name]
        assert (out / name).stat().st_ino != (tmp_path / f"old-{name}").stat().st_ino
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"])  # no temp files left


# ---------------------------------------------------------------- plaintext token


@pytest.mark.parametrize("security", [ServerSecurity, ClientSecurity])
def test_a_token_over_plaintext_is_refused_unless_allowed(security: type, token_file: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as info:
        security(insecure=True, token_file=str(token_file)).validate()
    assert info.value.key == "token_file"
    for word in ("insecure", "allow_plaintext_token", "--allow-plaintext-token", "TLS"):
        assert word in str(info.value)
    assert TOKEN not in str(info.value)
    caplog.set_level(logging.WARNING)
    allowed = security(insecure=True, token_file=str(token_file), allow_plaintext_token=True)
    allowed.validate()
    assert not any("PLAINTEXT TOKEN" in r.getMessage() for r in caplog.records)
    if security is ServerSecurity:
        assert len(allowed.interceptors()) == 1
    else:
        allowed.channel("127.0.0.1:9", []).close()
    warnings = [r.getMessage() for r in caplog.records if "PLAINTEXT TOKEN" in r.getMessage()]
    assert len(warnings) == 1 and "anyone on the network" in warnings[0]


def test_the_client_refuses_a_plaintext_token_even_unvalidated(token_file: Path) -> None:
    with pytest.raises(ConfigError, match="allow_plaintext_token"):
        ClientSecurity(insecure=True, token_file=str(token_file)).channel("127.0.0.1:9", [])
    with pytest.raises(ConfigError, match="allow_plaintext_token"):
        ServerSecurity(insecure=True, token_file=str(token_file)).interceptors()


def test_tls_with_a_token_and_plaintext_without_one_need_no_permission(token_file: Path) -> None:
    ServerSecurity(tls_cert="s.pem", tls_key="s.key", token_file=str(token_file)).validate()
    ClientSecurity(tls_ca="ca.pem", token_file=str(token_file)).validate()
    ServerSecurity(insecure=True).validate()
    ClientSecurity(insecure=True).validate()


def test_allow_plaintext_token_is_a_key_of_both_configs(token_file: Path, tmp_path: Path) -> None:
    cloud = build(CloudConfig, {"bundle": str(tmp_path), "insecure": True, "token_file": str(token_file),
                                "allow_plaintext_token": True})
    assert cloud.security.allow_plaintext_token
    edge = build(EdgeConfig, {"bundle": str(tmp_path), "source": "synthetic:1", "insecure": True,
                              "token_file": str(token_file), "allow_plaintext_token": True})
    assert edge.security.allow_plaintext_token
    for cls, extra in ((CloudConfig, {}), (EdgeConfig, {"source": "synthetic:1"})):
        with pytest.raises(ConfigError, match="allow_plaintext_token"):
            build(cls, {"bundle": str(tmp_path), "insecure": True, "token_file": str(token_file), **extra})


def test_doctor_makes_the_client_the_agent_would_make(token_file: Path) -> None:
    from splitpoint import doctor

    transport = {"insecure": True, "token_file": str(token_file)}
    make, _ = doctor.client_factory("127.0.0.1:9", transport)
    with pytest.raises(ConfigError, match="allow_plaintext_token"):
        make()
    make, _ = doctor.client_factory("127.0.0.1:9", {**transport, "allow_plaintext_token": True})
    make().channel.close()


@pytest.mark.parametrize("command", [["cloud"], ["edge", "--source", "synthetic:1"]])
def test_cli_exits_2_naming_the_keys(command: list[str], token_file: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    argv = [*command, "--bundle", str(tmp_path), "--insecure", "--token-file", str(token_file)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "token_file" in err and "insecure" in err and "--allow-plaintext-token" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- refusal log


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.refusals"]


def test_refusals_are_logged_once_per_client_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.refusals")
    clock = ManualClock(1000.0)
    refusals = RefusalLog(logging.getLogger("test.refusals"), interval_s=60, clock=clock)
    for _ in range(300):
        refusals.note("ipv4:10.0.0.5", "/splitpoint.v1.Offload/Describe: missing or invalid bearer token")
        clock.t += 0.1  # 300 calls in 30 s: one interval
    refusals.note("ipv4:10.0.0.6", "/x: no")
    lines = _lines(caplog)
    assert len(lines) == 2
    assert "10.0.0.5" in lines[0] and "Describe" in lines[0] and "10.0.0.6" in lines[1]
    clock.t += 60  # both windows are over: the next refusal from anyone reports the counts
    refusals.note("ipv4:10.0.0.7", "/y: no")
    lines = _lines(caplog)[2:]
    assert len(lines) == 2
    assert "299 more calls from ipv4:10.0.0.5" in lines[0]
    assert "10.0.0.7" in lines[1]  # 10.0.0.6 had nothing more: no line for it
    # a new interval for the first client starts with one line again
    refusals.note("ipv4:10.0.0.5", "/z: no")
    refusals.note("ipv4:10.0.0.5", "/z: no")
    assert len(_lines(caplog)) == 5
    refusals.flush()  # shutdown: what is pending is reported
    assert "1 more calls from ipv4:10.0.0.5" in _lines(caplog)[-1]


def test_refusal_log_tracks_a_bounded_number_of_clients(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.refusals")
    refusals = RefusalLog(logging.getLogger("test.refusals"), interval_s=60, max_clients=4, clock=ManualClock(1000.0))
    for i in range(1000):  # forged source addresses
        refusals.note(f"ipv4:10.0.{i // 256}.{i % 256}", "no")
    assert len(refusals._windows) <= 5
    lines = _lines(caplog)
    assert len(lines) == 5 and OTHER_CLIENTS in lines[-1]
    refusals.flush()
    assert "995 more calls from other clients" in _lines(caplog)[-1]


def test_client_of_drops_the_port() -> None:
    assert client_of("ipv4:127.0.0.1:54321") == "ipv4:127.0.0.1"
    assert client_of("ipv6:[::1]:54321") == "ipv6:[::1]"
    assert client_of("unix:/tmp/sock") == "unix:/tmp/sock"


# ---------------------------------------------------------------- zlib trailing data


def _zlib_tensor(trailing: bytes) -> tensor_pb2.Tensor:
    msg = encode(np.arange(24, dtype=np.int8).reshape(2, 12), name="x", compression=tensor_pb2.COMPRESSION_ZLIB)
    msg.data = msg.data + trailing
    return msg


@pytest.mark.parametrize("trailing", [b"junk", b"\0", zlib.compress(b"a second stream")])
def test_trailing_data_after_the_zlib_stream_is_rejected(trailing: bytes) -> None:
    with pytest.raises(TensorError) as info:
        decode(_zlib_tensor(trailing))
    assert info.value.field == "tensor.data"
    assert f"{len(trailing)} bytes of trailing data" in str(info.value)


def test_an_exact_zlib_stream_still_decodes() -> None:
    out = decode(_zlib_tensor(b""))
    assert out.array.tolist() == np.arange(24, dtype=np.int8).reshape(2, 12).tolist()


def test_certs_to_an_empty_output_is_refused_not_written_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`certs -o ""` wrote the CA's key and every certificate into the current directory."""
    from splitpoint.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["certs", "-o", " "]) == 2
    assert '--output = " ": give the directory to write' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
