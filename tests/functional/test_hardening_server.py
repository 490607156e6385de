"""Hardening (issue 12, item 6) on real servers: an open health Watch does not hold up
shutdown (a real `splitpoint cloud` process, SIGTERM), zlib with trailing bytes is
INVALID_ARGUMENT, a token over plaintext only when both sides allow it, and refused calls
logged once per client per interval."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_server.config import CloudConfig
from cloud_server.server import CloudServer
from edge_node.client import OffloadClient
from splitpoint.bundle import load_bundle
from splitpoint.codec import encode
from splitpoint.errors import RemoteError
from splitpoint.security import ClientSecurity
from splitpoint.v1 import offload_pb2, offload_pb2_grpc, tensor_pb2

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-0123456789abcdef"
GRACE_S = 30.0


def test_sigterm_ends_an_open_health_watch_at_once(cloud_process: Callable[..., Any]) -> None:
    server = cloud_process("--grace-s", str(GRACE_S))
    proc, address, log = server.proc, server.address, server.log
    statuses: list[int] = []
    first = threading.Event()
    ended: dict[str, object] = {}
    finished = threading.Event()
    channel = grpc.insecure_channel(address)

    def watch() -> None:
        try:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=3 * GRACE_S)
            for resp in stream:
                statuses.append(resp.status)
                first.set()
            ended["code"] = grpc.StatusCode.OK
        except grpc.RpcError as err:
            ended["code"] = err.code()
        finally:
            finished.set()

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        assert first.wait(30), "the Watch never answered"
        assert statuses == [health_pb2.HealthCheckResponse.SERVING]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=3 * GRACE_S)
        took = time.monotonic() - t0
        assert finished.wait(10), "the Watch stream did not end"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        channel.close()
    assert code == 0, log.read_text()[-2000:]
    # before: the open Watch held the gRPC server's stop for all of grace_s
    assert took < GRACE_S / 3, f"shutdown took {took:.1f} s with grace_s = {GRACE_S}"
    # the watcher saw the server leave before its stream ended
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert ended["code"] in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)


def test_a_watch_opened_during_shutdown_ends_at_once(cloud_server: CloudServer) -> None:
    # the health servicer alone: shutdown has begun, the gRPC server still accepts calls
    cloud_server.health.enter_graceful_shutdown()
    cloud_server.health.end_watches()
    with grpc.insecure_channel(cloud_server.address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        got = [r.status for r in stream]  # ends by itself; a hang would be DEADLINE_EXCEEDED
    assert got == [health_pb2.HealthCheckResponse.NOT_SERVING]


def test_zlib_with_trailing_bytes_is_invalid_argument(cloud_server: CloudServer, digits_bundle: Path) -> None:
    m = load_bundle(digits_bundle).manifest
    cut = m.split(2).cut[0]

    def frame(trailing: bytes) -> offload_pb2.InferRequest:
        req = offload_pb2.InferRequest(frame_id=7, model_digest=m.model_digest, split=2)
        t = encode(np.ones(cut.shape, np.dtype(cut.dtype)), name=cut.name, quantization=cut.quantization,
                   compression=tensor_pb2.COMPRESSION_ZLIB)
        t.data = t.data + trailing
        req.tensors.append(t)
        return req

    with grpc.insecure_channel(cloud_server.address) as channel:
        stub = offload_pb2_grpc.OffloadStub(channel)
        assert stub.InferFrame(frame(b""), timeout=30).error.code == 0  # the same frame without junk is served
        with pytest.raises(grpc.RpcError) as info:
            stub.InferFrame(frame(b"trailing junk"), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "13 bytes of trailing data after the zlib stream" in info.value.details()


def test_plaintext_token_when_allowed_and_refusals_logged_once(digits_bundle: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-token-but-long-enough\n")
    wrong_file.chmod(0o600)
    caplog.set_level(logging.WARNING)
    conf = CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", grace_s=1.0, insecure=True,
                       token_file=str(token_file), allow_plaintext_token=True)
    conf.validate()
    server = CloudServer(conf).start()
    try:
        assert any("PLAINTEXT TOKEN" in r.getMessage() and "accepted" in r.getMessage() for r in caplog.records)
        good = OffloadClient(server.address, security=ClientSecurity(
            insecure=True, token_file=str(token_file), allow_plaintext_token=True))
        assert good.describe().model_name == "digits-cnn"
        good.close()
        assert any("PLAINTEXT TOKEN" in r.getMessage() and "sent" in r.getMessage() for r in caplog.records)
        wrong = OffloadClient(server.address, security=ClientSecurity(
            insecure=True, token_file=str(wrong_file), allow_plaintext_token=True))
        for _ in range(50):
            with pytest.raises(RemoteError) as info:
                wrong.describe()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        wrong.close()
    finally:
        server.stop()
    refused = [r.getMessage() for r in caplog.records if r.name == "splitpoint.security" and "refused" in r.getMessage()]
    # before: 50 WARNING lines, one per refused call
    assert len(refused) == 1, refused
    assert "127.0.0.1" in refused[0] and "Describe" in refused[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and "not-the-token" not in logged
