"""`splitpoint doctor`: each check on fake sysfs trees, real bundles and a real server."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from edge_node.config import EdgeConfig
from splitpoint import doctor, doctor_device
from splitpoint.cli import main
from splitpoint.doctor_checks import Check, guarded


def usb_device(root: Path, name: str, vid: str, pid: str, speed: str | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "idVendor").write_text(vid + "\n")
    (d / "idProduct").write_text(pid + "\n")
    if speed:
        (d / "speed").write_text(speed + "\n")


def test_finds_coral_usb_ids_and_warns_about_usb2(tmp_path: Path) -> None:
    usb_device(tmp_path, "1-1", "1a6e", "089a", "480")
    usb_device(tmp_path, "2-1", "18d1", "9302", "5000")
    usb_device(tmp_path, "1-2", "046d", "c52b", "12")  # a mouse
    found = doctor_device.find_edgetpu_usb(tmp_path)
    assert [(n, ids) for n, ids, _ in found] == [("1-1", "1a6e:089a"), ("2-1", "18d1:9302")]
    assert "USB 2" in found[0][2] and "firmware not loaded" in found[0][2]
    assert "USB 2" not in found[1][2]
    checks = doctor_device.check_edgetpu("cpu", usb_root=tmp_path, apex=tmp_path / "no-apex")
    usb = [c for c in checks if c.name == "Edge TPU (USB)"]
    assert [c.status for c in usb] == ["warn", "ok"]


def test_no_edgetpu_here_is_a_failure_only_when_asked_for(tmp_path: Path) -> None:
    asked = doctor_device.check_edgetpu("edgetpu", usb_root=tmp_path, apex=tmp_path / "none")
    assert {c.status for c in asked} == {"FAIL"}
    assert any("libedgetpu" in c.detail for c in asked)
    on_cpu = doctor_device.check_edgetpu("cpu", usb_root=tmp_path, apex=tmp_path / "none")
    assert {c.status for c in on_cpu} == {"warn"}
    bad = doctor_device.check_edgetpu("tpu9", usb_root=tmp_path, apex=tmp_path / "none")
    assert any(c.status == "FAIL" and "tpu9" in c.detail for c in bad)


def test_runtimes_are_listed() -> None:
    checks = doctor_device.check_runtimes()
    assert "ai-edge-litert" in checks[0].detail
    assert not [c for c in checks if c.status == "FAIL"]


def test_bundle_check_names_a_modified_file(digits_bundle: Path, tmp_path: Path) -> None:
    assert doctor.check_bundle(str(digits_bundle))[0].status == "ok"
    copy = tmp_path / "b"
    shutil.copytree(digits_bundle, copy)
    head = copy / "edge" / "head_3.tflite"
    data = bytearray(head.read_bytes())
    data[100] ^= 0xFF
    head.write_bytes(bytes(data))
    checks = doctor.check_bundle(str(copy))
    assert checks[0].status == "FAIL" and "head_3.tflite" in checks[0].detail


def dead_address() -> tuple[socket.socket, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return s, f"127.0.0.1:{s.getsockname()[1]}"


def test_cloud_checks(cloud_server, digits_bundle: Path, tmp_path: Path) -> None:
    from edge_node.client import OffloadClient
    from splitpoint.security import ClientSecurity

    def client(addr: str):
        return lambda: OffloadClient(addr, timeout_s=3, security=ClientSecurity(insecure=True))

    digest = doctor.bundle_identity(str(digits_bundle))
    assert digest is not None and digest[1] == list(range(7))  # every split but K = 7
    fixed = EdgeConfig(bundle=str(digits_bundle), source="synthetic:1", split=3)
    assert doctor.bundle_identity(str(digits_bundle), fixed) == (digest[0], [3])  # what this agent sends
    fixed.policy.name = "min-latency"
    assert doctor.bundle_identity(str(digits_bundle), fixed) == digest
    fixed.splits = [3, 5]  # an adaptive agent that loads these: a server of 3 and 5 serves it
    assert doctor.bundle_identity(str(digits_bundle), fixed) == (digest[0], [3, 5])
    ok = doctor.check_cloud(client(cloud_server.address), digest)
    assert [c.status for c in ok] == ["ok", "ok", "ok"]
    assert ok[2].name == "clock skew"
    other = doctor.check_cloud(client(cloud_server.address), ("sha256:other", digest[1]))
    assert other[1].status == "FAIL" and "sha256:other" in other[1].detail
    # the same model partitioned with other --splits: the digest matches, a split does not (was "ok")
    fewer = doctor.check_cloud(client(cloud_server.address), (digest[0], [*digest[1], 9]))
    assert fewer[1].status == "FAIL" and "has no tail for split(s) 9 of the local bundle" in fewer[1].detail
    sock, addr = dead_address()
    try:
        dead = doctor.check_cloud(client(addr), digest)
    finally:
        sock.close()
    assert dead[0].status == "FAIL" and addr in dead[0].detail


def test_cli_exit_codes_and_no_tracebacks(cloud_server, digits_bundle: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "{digits_bundle}"\ncloud = "{cloud_server.address}"\ninsecure = true\n'
                    f'results = "{tmp_path / "r.jsonl"}"\nsource = "synthetic:1"\n')
    assert main(["doctor", "--config", str(conf)]) == 0  # cpu: a missing Edge TPU is only a warning
    out = capsys.readouterr().out
    assert "no problems found" in out and "same model digest" in out
    assert main(["doctor", "--config", str(conf), "--device", "edgetpu"]) == 1
    # TLS asked for, but the CA file is missing: a FAIL line, not a traceback
    assert main(["doctor", "--cloud", cloud_server.address, "--tls-ca", str(tmp_path / "nope.pem")]) == 1
    captured = capsys.readouterr()
    assert "nope.pem" in captured.out and "Traceback" not in captured.out + captured.err



def test_usb_device_node_and_the_settings_doctor_checks(tmp_path: Path) -> None:
    usb_device(tmp_path, "3-1", "18d1", "9302", "5000")
    (tmp_path / "3-1" / "busnum").write_text("3\n")
    (tmp_path / "3-1" / "devnum").write_text("12\n")
    assert doctor_device.usb_device_node(tmp_path / "3-1", Path("/dev/bus/usb")) == Path("/dev/bus/usb/003/012")
    assert doctor_device.usb_device_node(tmp_path / "nothing") is None

    from splitpoint.certs import make_dev_certs

    ca = make_dev_certs(tmp_path / "certs", ["localhost"]).ca_cert  # a CA the agent would take
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "b"\nsource = "synthetic:1"\ntls_ca = "{ca}"\n[policy]\nname = "fixed"\n')
    values, checks, _ = doctor.resolve_settings(str(conf), {"device": "edgetpu", "bundle": None, "results": ""})
    assert [c.status for c in checks] == ["ok"]
    # the agent's defaults, the file, then flags
    assert values["cloud"] == "127.0.0.1:50051" and values["bundle"] == "b" and values["tls_ca"] == str(ca)
    assert values["device"] == "edgetpu" and values["results"] == "results.jsonl" and values["insecure"] is False
    conf.write_text('bundle = "b"\nsource = "synthetic:1"\nmode = "fast"\n')
    _, checks, _ = doctor.resolve_settings(str(conf), {})
    assert checks[0].status == "FAIL" and "mode" in checks[0].detail and "fast" in checks[0].detail
    conf.write_text("bundle = [unclosed\n")
    values, checks, _ = doctor.resolve_settings(str(conf), {"cloud": "h:1"})
    assert checks[0].status == "FAIL" and "not valid TOML" in checks[0].detail and values["cloud"] == "h:1"
    values, checks, _ = doctor.resolve_settings(None, {})
    assert checks == [] and "cloud" not in values  # no config, no --cloud: no cloud check


@pytest.mark.parametrize(("policy", "said"), [
    ('name = "min-latency"\nedge_profile = "nope-edge.json"\ncloud_profile = "nope-cloud.json"',
     'policy.edge_profile = "nope-edge.json": file not found'),
    ('name = "fixed"\nsplit = 99', "policy.split = 99: not a split of digits-cnn"),
    ('name = "fixed"\nsplit = 3', "insecure = false: no tls_ca to verify the server with"),
])
def test_a_config_whose_policy_the_agent_refuses_fails_the_config_check(digits_bundle: Path, tmp_path: Path,
                                                                       policy: str, said: str) -> None:
    """doctor said "valid edge config" and "no problems found" for configs `splitpoint edge`
    refuses at start (exit 2): a profile or power table missing, a split the bundle lacks, an
    offloading policy with neither TLS nor plaintext chosen. It builds the policy now."""
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "{digits_bundle}"\nsource = "synthetic:1"\n[policy]\n{policy}\n')
    _, checks, _ = doctor.resolve_settings(str(conf), {})
    assert [c.status for c in checks] == ["FAIL"] and said in checks[0].detail, checks
    assert checks[0].detail.endswith("(`splitpoint edge` would refuse to start)")


@pytest.mark.parametrize("files", ['tls_ca = "{d}"', 'tls_cert = "{d}"\ntls_key = "{d}"', 'token_file = "{d}"'])
def test_a_config_whose_tls_or_token_file_the_agent_refuses_fails_the_config_check(digits_bundle: Path,
                                                                                   tmp_path: Path, files: str) -> None:
    """A directory given as tls_cert: `splitpoint edge` exits 2 naming it before its bundle loads;
    doctor called the config valid and failed only the cloud line, "cannot set up the connection"."""
    (tmp_path / "certdir.pem").mkdir()
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "{digits_bundle}"\nsource = "synthetic:1"\ncloud = "127.0.0.1:5"\n'
                    + files.format(d=tmp_path / "certdir.pem") + "\n")
    _, checks, _ = doctor.resolve_settings(str(conf), {})
    assert [c.status for c in checks] == ["FAIL"], checks
    assert "certdir.pem\": is a directory" in checks[0].detail, checks
    assert checks[0].detail.endswith("(`splitpoint edge` would refuse to start)")


def test_guarded_secrets_and_disk(tmp_path: Path) -> None:
    def broken() -> list[Check]:
        raise KeyError("boom")

    (fail,) = guarded("thing", broken)
    assert fail.status == "FAIL" and fail.name == "thing" and "boom" in fail.detail
    token = tmp_path / "token"
    token.write_text("x" * 20)
    token.chmod(0o644)
    key = tmp_path / "client.key"
    key.write_text("k")
    key.chmod(0o600)
    checks = doctor.check_secret_files({"token_file": str(token), "tls_key": str(key), "tls_ca": str(tmp_path / "no")})
    assert [(c.status, "chmod 600" in c.detail) for c in checks] == [("warn", True), ("ok", False), ("FAIL", False)]
    assert checks[2].detail.startswith(f"tls_ca {tmp_path / 'no'}: No such file or directory")  # ignored once
    disk = doctor.check_disk(str(tmp_path / "not" / "yet" / "results.jsonl"))
    assert disk[0].status == "ok" and str(tmp_path) in disk[0].detail
    # a results log under a file: 'no problems found' once
    (under_file,) = doctor.check_disk(str(token / "results.jsonl"))
    assert under_file.status == "FAIL" and f"{token} is a file, not a directory" in under_file.detail
    import os

    os.mkfifo(tmp_path / "pipe.jsonl")
    (pipe,) = doctor.check_disk(str(tmp_path / "pipe.jsonl"))
    assert pipe.status == "FAIL" and "not a regular file" in pipe.detail


def test_doctor_refuses_a_results_log_the_agent_would_refuse(tmp_path: Path) -> None:
    """A directory, a text file and another program's SQLite database each passed ('no problems
    found'), and the agent then refused them: a service restarting every 2 s."""
    import sqlite3

    from splitpoint import doctor

    (tmp_path / "notes.jsonl").write_text("hello\n")
    db = sqlite3.connect(tmp_path / "other.db")
    db.execute("CREATE TABLE x (a)")
    db.commit()
    db.close()
    (tmp_path / "log.jsonl").write_text('{"frame_id":0,"origin":"a.png","status":"ok"}\n{"frame_id":1,"or')  # torn
    for name, said in (("", f"{tmp_path} is a directory: `results` names the log file itself"),
                       ("notes.jsonl", "would refuse it: results = "), ("other.db", "a SQLite database with no results table"),
                       ("a\0b.jsonl", "contains a NUL byte")):
        (check,) = doctor.check_disk(str(tmp_path / name) if name else str(tmp_path))
        assert check.status == "FAIL" and check.name == "results log" and said in check.detail, check
    assert [(c.status, c.name) for c in doctor.check_disk(str(tmp_path / "log.jsonl"))] == [("ok", "disk"),
                                                                                          ("ok", "results log")]
    # a log of the other format than results_format: the agent refuses it too
    (check,) = doctor.check_disk(str(tmp_path / "log.jsonl"), "sqlite")
    assert check.status == "FAIL" and "is a JSONL results log, and results_format is sqlite" in check.detail
    from edge_node.results import open_results

    log = open_results(tmp_path / "log2.db", "sqlite", fsync=False)
    log.write({"frame_id": 0, "origin": "a.png", "status": "ok"})
    log.close()
    (check,) = doctor.check_disk(str(tmp_path / "log2.db"))
    assert check.status == "FAIL" and 'is a SQLite results log, and results_format is jsonl: set results_format = "sqlite"' \
        in check.detail
    assert [c.status for c in doctor.check_disk(str(tmp_path / "log2.db"), "sqlite")] == ["ok", "ok"]


def test_cloud_over_mutual_tls_with_a_token(digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cloud_server.config import CloudConfig
    from cloud_server.server import CloudServer
    from splitpoint.certs import make_dev_certs

    certs = make_dev_certs(tmp_path / "certs", ["localhost", "127.0.0.1"])
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789abcdef\n")
    token.chmod(0o600)
    tls = CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", grace_s=1.0, tls_cert=str(certs.server_cert),
                      tls_key=str(certs.server_key), tls_client_ca=str(certs.ca_cert), token_file=str(token))
    tls.validate()
    server = CloudServer(tls).start()
    plain = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", grace_s=1.0, insecure=True)).start()
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "{digits_bundle}"\nsource = "synthetic:1"\ncloud = "{server.address}"\n'
                    f'results = "{tmp_path / "r.jsonl"}"\ntls_ca = "{certs.ca_cert}"\ntls_cert = "{certs.client_cert}"\n'
                    f'tls_key = "{certs.client_key}"\ntoken_file = "{token}"\n')
    try:
        assert main(["doctor", "--config", str(conf)]) == 0  # TLS keys come from the file
        assert "same model digest" in capsys.readouterr().out
        no_token = conf.read_text().replace(f'token_file = "{token}"', "")
        conf.write_text(no_token)
        assert main(["doctor", "--config", str(conf)]) == 1
        assert "token_file" in capsys.readouterr().out
        assert main(["doctor", "--config", str(conf), "--cloud", plain.address]) == 1  # TLS agent, plaintext server
        assert "plaintext" in capsys.readouterr().out
        assert main(["doctor", "--cloud", server.address, "--insecure"]) == 1  # plaintext agent, TLS server
        captured = capsys.readouterr()
        assert "expects TLS" in captured.out and "Traceback" not in captured.out + captured.err
    finally:
        server.stop()
        plain.stop()


def test_a_fleets_cloud_is_checked_replica_by_replica(cloud_server, digits_bundle: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The `cloud` forms `splitpoint edge` and docs/scaling.md accept: a list was read as one
    HOST:PORT (`'127.0.0.1:A,127.0.0.1' is not a host name or address`, exit 1)."""
    from helpers import running_server

    def cloud_lines(argv: list[str], code: int = 0) -> list[str]:
        assert main(["doctor", "--bundle", str(digits_bundle), "--results", str(tmp_path / "r.jsonl"), *argv]) == code
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        return [line for line in captured.out.splitlines() if line.split("]")[-1].startswith((" cloud", " clock"))]

    one = cloud_server.address
    sock, dead = dead_address()
    with running_server(digits_bundle) as other:
        fleet = f"{one},{other.address}"
        lines = cloud_lines(["--insecure", "--cloud", fleet])
        assert [line.split(":")[0] for line in lines] == ["[  ok] cloud", "[  ok] cloud bundle", "[  ok] clock skew"] * 2
        assert lines[0].startswith(f"[  ok] cloud: {one} serves") and lines[3].startswith(f"[  ok] cloud: {other.address} serves")
        assert lines[1] == f"[  ok] cloud bundle: {one}: same model digest as the local bundle"
        conf = tmp_path / "edge.toml"  # docs/scaling.md, step 5
        conf.write_text(f'bundle = "{digits_bundle}"\ncloud = "{fleet}"\ninsecure = true\nsource = "synthetic:1"\n')
        from_file = cloud_lines(["--config", str(conf)])
        assert [line.split(" serves")[0] for line in from_file[::3]] == [f"[  ok] cloud: {one}",
                                                                          f"[  ok] cloud: {other.address}"]
        grpc_form = cloud_lines(["--insecure", "--cloud", f"ipv4:{fleet}"])  # gRPC's own form, as written
        assert [line.split(" serves")[0] for line in grpc_form[::3]] == [f"[  ok] cloud: ipv4:{one}",
                                                                          f"[  ok] cloud: ipv4:{other.address}"]
        try:  # one replica down is a FAIL naming it; the other is still checked
            down = cloud_lines(["--insecure", "--cloud", f"{one},{dead}"], code=1)
        finally:
            sock.close()
        assert down[0].startswith(f"[  ok] cloud: {one} serves") and down[3].startswith(f"[FAIL] cloud: {dead}: UNAVAILABLE")
    [dns, bundle, _] = cloud_lines(["--insecure", "--cloud", f"dns:///localhost:{cloud_server.port}"])  # one target
    assert dns.startswith(f"[  ok] cloud: dns:///localhost:{cloud_server.port} serves"), dns
    assert bundle == "[  ok] cloud bundle: same model digest as the local bundle"
    # what is wrong for every replica is said once, as `splitpoint edge` says it
    [tls] = cloud_lines(["--tls-ca", str(tmp_path / "ca.pem"), "--cloud", "127.0.0.1:1,127.0.0.1:2"], code=1)
    assert "lists several servers, and over TLS gRPC verifies one name" in tls, tls
    conf = tmp_path / "names.toml"  # in the file, the config check and the cloud check say it
    conf.write_text(f'bundle = "{digits_bundle}"\ncloud = "localhost:1,localhost:2"\ninsecure = true\n'
                    'source = "synthetic:1"\n')
    [names] = cloud_lines(["--config", str(conf)], code=1)
    assert "'localhost' is a name, and a list of servers takes IP addresses" in names, names
    # as --cloud, a usage error (exit 2), as `splitpoint edge` says it: it was a FAIL line and exit 1
    assert main(["doctor", "--bundle", str(digits_bundle), "--insecure", "--cloud", "localhost:1,localhost:2"]) == 2
    assert capsys.readouterr().err.startswith('splitpoint doctor: error: cloud = "localhost:1,localhost:2": '
                                              "'localhost' is a name")


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _keys(cls: type, prefix: str = "") -> set[str]:
    import dataclasses
    import typing

    out: set[str] = set()
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out |= _keys(tp, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def _example_keys(text: str) -> set[str]:
    """Every key the example sets or shows commented out, dotted by its [table]."""
    import re

    keys, table = set(), ""
    for line in text.splitlines():
        if m := re.match(r"^\[([a-z_.]+)\]", line):
            table = m.group(1) + "."
        elif m := re.match(r"^(?:# )?([a-z_]+) = \S", line):
            keys.add(table + m.group(1))
    return keys


@pytest.mark.parametrize("side", ["edge", "cloud"])
def test_deploy_examples_cover_every_key_and_use_tls(side: str) -> None:
    from cloud_server.config import CloudConfig
    from edge_node.config import EdgeConfig
    from splitpoint import config as cfg

    cls = EdgeConfig if side == "edge" else CloudConfig
    path = DEPLOY / f"{side}.toml.example"
    assert _example_keys(path.read_text()) == _keys(cls)  # a key added to the config must be added here
    conf = cfg.build(cls, cfg.read_toml(path))
    assert conf.insecure is False and conf.token_file


def test_systemd_units() -> None:
    import configparser

    from cloud_server.config import CloudConfig

    def service(name: str) -> configparser.SectionProxy:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(DEPLOY / "systemd" / name)
        return parser["Service"]

    edge = service("splitpoint-edge.service")
    assert edge["ExecStart"] == "/opt/splitpoint/venv/bin/splitpoint edge --config /etc/splitpoint/edge.toml"
    assert edge["ExecReload"] == "/bin/kill -HUP $MAINPID" and edge["Restart"] == "always"
    assert "plugdev" in edge["SupplementaryGroups"].split() and edge["StateDirectory"] == "splitpoint"
    cloud = service("splitpoint-cloud.service")
    assert cloud["ExecStart"].endswith("splitpoint cloud --config /etc/splitpoint/cloud.toml")
    assert float(cloud["TimeoutStopSec"]) > CloudConfig.grace_s + 5


def test_advice_is_marked_as_a_hint_not_as_a_finding() -> None:
    pairing = [c for c in doctor_device.check_runtimes() if c.name == "runtime/delegate pairing"]
    assert [c.status for c in pairing] == ["hint"]  # advice, not "[  ok]" as if something was checked
    assert pairing[0].line().startswith("[hint] ")


def test_an_all_edge_config_without_tls_is_not_failed_for_a_server_it_never_contacts(
        digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the agent starts without tls_ca or insecure when every frame runs on the edge; the doctor
    # FAILed the default cloud 127.0.0.1:50051 for want of a tls_ca
    conf = tmp_path / "edge.toml"
    base = f'bundle = "{digits_bundle}"\nsource = "synthetic:1"\nresults = "{tmp_path / "r.jsonl"}"\n'
    conf.write_text(base)
    assert main(["doctor", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "the agent contacts no server: its policy runs every frame on the edge" in out and "no tls_ca" not in out
    conf.write_text(base + "split = 3\n")  # this one offloads: TLS or plaintext must be chosen
    assert main(["doctor", "--config", str(conf)]) == 1
    assert "no tls_ca to verify the server with" in capsys.readouterr().out
    conf.write_text(base + "require_cloud = true\n")
    assert main(["doctor", "--config", str(conf)]) == 1
    assert "no tls_ca to verify the server with" in capsys.readouterr().out


# ---------------------------------------------------------------- the frame source


def fake_camera(monkeypatch: pytest.MonkeyPatch, opens: bool, read: object) -> None:
    """cv2 as a camera that opens (or not) and whose every read() is `read()`."""
    import sys

    from helpers import fake_cv2

    monkeypatch.setitem(sys.modules, "cv2", fake_cv2([], opens=opens, read=read))


def test_the_source_is_opened_and_its_first_frame_read(digits_bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera the service user may not open, unplugged, or a directory without images stopped
    the agent at its start after the doctor had said "no problems found"."""
    import threading

    import numpy as np
    from PIL import Image

    from splitpoint.doctor_source import check_source

    bundle = str(digits_bundle)
    Image.new("L", (40, 30), 7).save(tmp_path / "a.png")
    [ok] = check_source(str(tmp_path), bundle)
    assert (ok.status, ok.detail) == ("ok", f"directory {tmp_path} (1 files): frame 0 (a.png) read, 40x30"), ok
    empty = tmp_path / "empty"
    empty.mkdir()
    [none] = check_source(str(empty), bundle)
    assert none.status == "FAIL" and "no image files" in none.detail
    assert check_source("synthetic:2", bundle)[0].status == "ok"
    assert check_source("", bundle)[0].status == "skip"
    assert check_source("camera:0", None)[0].status == "skip"  # frames are fitted to the bundle's input
    # cameras, through a stand-in for OpenCV
    fake_camera(monkeypatch, True, lambda: (True, np.full((48, 64, 3), 9, np.uint8)))
    [cam] = check_source("camera:0", bundle)
    assert (cam.status, cam.detail) == ("ok", "camera:0: frame 0 (camera:0#0) read, 64x48"), cam
    fake_camera(monkeypatch, True, lambda: (False, None))
    [dead] = check_source("camera:0", bundle)
    assert dead.status == "FAIL" and "stopped delivering frames" in dead.detail, dead
    hung = threading.Event()
    fake_camera(monkeypatch, True, lambda: (hung.wait(30), None))  # a read that never returns in time
    [slow] = check_source("camera:0", bundle, timeout_s=0.2)
    hung.set()
    assert slow.status == "FAIL" and slow.detail.startswith("camera:0 opened but gave no frame within 0.2 s"), slow
    fake_camera(monkeypatch, False, lambda: (False, None))
    [unplugged] = check_source("camera:57", bundle)
    assert (unplugged.status, unplugged.detail) == ("FAIL", 'source = "camera:57": camera 57 did not open: there is '
                                                            "no /dev/video57: is the camera plugged in? (`v4l2-ctl "
                                                            "--list-devices` lists the cameras)"), unplugged


def test_doctor_checks_the_configs_source(digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text(f'bundle = "{digits_bundle}"\nsource = "{tmp_path / "nothing-here"}"\n'
                    f'results = "{tmp_path / "r.jsonl"}"\n')
    assert main(["doctor", "--config", str(conf)]) == 1
    out = capsys.readouterr().out
    assert f'[FAIL] source: source = "{tmp_path / "nothing-here"}": no such' in out, out
    assert main(["doctor", "--config", str(conf), "--source", "synthetic:1"]) == 0  # the flag wins
    assert "[  ok] source: synthetic:1" in capsys.readouterr().out


def compiled_as(bundle_dir: Path, head: str) -> object:
    """The digits bundle as if its head 1 had been compiled for the Edge TPU as `head`."""
    from types import SimpleNamespace

    from splitpoint.bundle import load_bundle

    real = load_bundle(bundle_dir, side="edge")
    return SimpleNamespace(manifest=SimpleNamespace(splits=[SimpleNamespace(split=0, edgetpu_head=None),
                                                            SimpleNamespace(split=1, edgetpu_head=SimpleNamespace(
                                                                path=head))]),
                           path=real.path)


def test_a_compiled_head_is_loaded_and_run_on_the_edge_tpu(digits_bundle: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The delegate stands in as None, so the real head file runs in LiteRT on the CPU: the
    check's own path - load, run, time - is the real one."""
    from splitpoint import doctor_bundle
    from splitpoint.runtime import litert

    monkeypatch.setattr(litert, "load_edgetpu_delegate", lambda device: None)
    [check] = doctor_bundle.check_edgetpu_head(compiled_as(digits_bundle, "edge/head_1.tflite"), "edgetpu:usb:0")
    assert check.status == "ok" and check.detail.startswith(
        "head 1 (edge/head_1.tflite) loads and runs on edgetpu:usb:0: first run "), check


def test_a_compiled_head_that_will_not_load_or_run_is_a_fail(digits_bundle: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What a version mismatch between the compiler and the Pi's runtime looks like before the
    flight, not at its start."""
    from splitpoint import doctor_bundle
    from splitpoint.runtime import litert

    monkeypatch.setattr(litert, "load_edgetpu_delegate", lambda device: None)
    bundle = compiled_as(digits_bundle, "manifest.json")  # a file that is not a model
    [check] = doctor_bundle.check_edgetpu_head(bundle, "edgetpu")
    assert check.status == "FAIL" and check.detail.startswith(f"cannot load head {digits_bundle}/manifest.json: "), check

    def fails(self: object, x: object) -> None:
        raise RuntimeError("Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.")

    monkeypatch.setattr(litert.HeadRunner, "run_all", fails)
    [check] = doctor_bundle.check_edgetpu_head(compiled_as(digits_bundle, "edge/head_1.tflite"), "edgetpu")
    assert check.line() == ("[FAIL] bundle on the Edge TPU: head 1 loaded on edgetpu but its run failed (RuntimeError: "
                            "Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke.)")


def test_no_head_is_tried_without_a_delegate_or_a_compiled_head(digits_bundle: Path) -> None:
    """This machine has no libedgetpu: the delegate line says why, this one only that nothing was tried."""
    from splitpoint import doctor_bundle

    [check] = doctor_bundle.check_edgetpu_head(compiled_as(digits_bundle, "edge/head_1.tflite"), "edgetpu")
    assert check.line() == ("[skip] bundle on the Edge TPU: the Edge TPU delegate did not load (above): no head "
                            "was tried on it")
    checks = doctor.check_bundle(str(digits_bundle), "edgetpu")
    assert [c.line() for c in checks][-1] == ("[skip] bundle on the Edge TPU: no head of this bundle is compiled "
                                              "for the Edge TPU")
    assert [c.name for c in doctor.check_bundle(str(digits_bundle))] == ["bundle", "bundle Edge TPU heads"]
    checks = doctor.check_bundle(str(digits_bundle), "edgetpu:nowhere")  # the Edge TPU check FAILs it
    assert [c.status for c in checks] == ["ok", "warn", "skip"], checks
