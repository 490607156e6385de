"""Server faults: a server killed mid-stream (SIGKILL) and restarted, and failover between servers.
Every frame ends in exactly one record; frames in flight at the kill are re-run locally."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud_server.config import CloudConfig
from cloud_server.server import CloudServer
from edge_node.agent import EdgeAgent
from edge_node.config import EdgeConfig
from edge_node.results import read_results
from edge_node.source_spec import open_source

ROOT = Path(__file__).resolve().parents[2]


def run_agent(conf: EdgeConfig, on_result=None) -> list[dict]:
    agent = EdgeAgent.from_config(conf, on_result=on_result)
    with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
        agent.run(source)
    return sorted(read_results(conf.results), key=lambda r: r["frame_id"])


def test_server_sigkilled_and_restarted_mid_stream(digits_bundle: Path, tmp_path: Path,
                                                   cloud_process: Callable[..., Any]) -> None:
    first = cloud_process()
    restarted = threading.Event()  # the new server on the same port is listening
    seen = {"n": 0, "cloud_after_restart": 0}
    agent_box: list[EdgeAgent] = []
    restarter: list[threading.Thread] = []

    def chaos(record: dict) -> None:
        seen["n"] += 1
        if seen["n"] == 40:  # kill -9 with frames in flight, restart on the same port a moment later
            first.kill()

            def restart() -> None:
                time.sleep(1.0)
                cloud_process(listen=first.address)
                restarted.set()

            restarter.append(threading.Thread(target=restart, daemon=True))
            restarter[0].start()
        if restarted.is_set() and record.get("where") == "cloud":
            seen["cloud_after_restart"] += 1
            if seen["cloud_after_restart"] == 50:  # back on the restarted server: enough
                agent_box[0].stop()

    # far more frames than the run needs: it ends when the restarted server has answered 50,
    # however long the restart takes on a busy machine
    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:20000", cloud=first.address, split=3,
                      insecure=True, results=str(tmp_path / "r.jsonl"), fps=60.0, window=4, frame_deadline_ms=1000)
    agent = EdgeAgent.from_config(conf, on_result=chaos)
    agent_box.append(agent)
    try:
        with open_source(conf.source, agent.bundle.manifest.preprocessing, agent.bundle, conf.fps) as source:
            agent.run(source)
    finally:
        for t in restarter:  # the restarted server must be known to the fixture before it cleans up
            t.join(150)
    records = sorted(read_results(conf.results), key=lambda r: r["frame_id"])
    assert restarted.is_set(), "the server was not restarted"
    assert seen["cloud_after_restart"] >= 50, "the agent did not return to the restarted server"
    assert [r["frame_id"] for r in records] == list(range(len(records)))  # each frame exactly once
    assert all(r["status"] == "ok" for r in records)
    where = [r["where"] for r in records]
    assert where[:30].count("cloud") == 30
    fallbacks = [r for r in records if r.get("fallback_reason")]
    assert fallbacks, "frames in flight at the kill should have run locally"


def test_failover_to_the_next_healthy_server(digits_bundle: Path, tmp_path: Path) -> None:
    servers = [CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True, grace_s=0.5)).start()
               for _ in range(2)]
    seen = {"n": 0}

    def kill_first(record: dict) -> None:
        seen["n"] += 1
        if seen["n"] == 30:
            threading.Thread(target=servers[0].stop, args=(0.0,), daemon=True).start()

    conf = EdgeConfig(bundle=str(digits_bundle), source="synthetic:150", insecure=True, split=3,
                      cloud=",".join(s.address for s in servers), results=str(tmp_path / "r.jsonl"), fps=50.0)
    try:
        records = run_agent(conf, kill_first)
        served_by_second = servers[1].metrics.frames.labels("3", "OK")._value.get()
    finally:
        for s in servers:
            s.stop()
    assert [r["frame_id"] for r in records] == list(range(150))
    assert all(r["status"] == "ok" for r in records)
    assert [r["where"] for r in records][-60:].count("cloud") == 60
    assert served_by_second >= 60


def _established_to(port: int) -> int:
    """Server-side TCP connections on `port` that are ESTABLISHED (this network namespace)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                count += 1
    return count


_CLIENT = """
import sys, time, grpc
channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=20)
print("connected", flush=True)
time.sleep(120)
"""


def test_the_server_closes_the_connection_of_a_client_gone_silent(digits_bundle: Path) -> None:
    """A drone whose power is cut leaves its connection ESTABLISHED on the server (no FIN), with its
    fd and buffers, until a ping goes unanswered: gRPC's default server ping is every 2 h. With
    keepalive_s the server pings; a client stopped dead (SIGSTOP: its kernel still ACKs, nothing
    answers a ping) loses its connection within keepalive_s + min(keepalive_s, 10) s, and a live
    client that answers keeps its own through as many pings."""
    import signal
    import subprocess
    import sys

    server = CloudServer(CloudConfig(bundle=str(digits_bundle), listen="127.0.0.1:0", insecure=True,
                                     keepalive_s=1.0)).start()
    clients = []
    try:
        for _ in range(2):
            clients.append(subprocess.Popen([sys.executable, "-c", _CLIENT, server.address], stdout=subprocess.PIPE,
                                            text=True))
        for c in clients:
            assert c.stdout is not None and c.stdout.readline().strip() == "connected"
        assert _established_to(server.port) == 2
        stopped, live = clients
        stopped.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 15  # 2 s of ping and timeout, with room for a loaded machine
        while _established_to(server.port) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _established_to(server.port) == 1, "the silent client's connection is still open"
        assert live.poll() is None
        # the live one kept its connection through the pings that closed the other: still there
        # after three more of its ping intervals
        time.sleep(3)
        assert _established_to(server.port) == 1
    finally:
        for c in clients:
            c.send_signal(signal.SIGCONT)
            c.kill()
            c.wait(10)
        server.stop()
