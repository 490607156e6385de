"""The fleet figures of docs/benchmarks.md: `splitpoint loadtest` against real server processes.

    python scripts/fleet_figures.py --bundle BUNDLE --out DIR [--agents 1,10,50,100,200] [--fps 5]
                                    [--split 3] [--duration 20] [--replicas 30] [--idle-streams 256]

Starts one `splitpoint cloud` on 127.0.0.1, measures its CPU with `--idle-streams` Infer streams
open and sending nothing (a parked fleet), then runs the load test for each agent count,
then three servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3 and runs `--replicas` agents
against one target naming all three. Writes each run's JSON into DIR and prints the
markdown table that goes into docs/benchmarks.md. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_cloud(bundle: str, listen: str, log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "splitpoint", "cloud", "--insecure", "--bundle", bundle,
                             "--listen", listen, "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("splitpoint cloud listening on "):
            return proc, line.rsplit(" ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server did not start; see {log}")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_percent(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def idle_streams_cpu(server: subprocess.Popen, address: str, n: int, seconds: float = 10.0) -> str:
    """The server's CPU with no stream, then with n Infer streams open that send nothing."""
    import grpc

    from splitpoint.v1 import offload_pb2_grpc

    quiet = server_cpu_percent(server.pid, seconds)
    release = threading.Event()

    def silent():  # sends nothing until released, then half-closes
        release.wait(seconds + 60)
        return
        yield

    channels = [grpc.insecure_channel(address) for _ in range(n)]
    calls = [offload_pb2_grpc.OffloadStub(ch).Infer(silent(), metadata=(("splitpoint-agent", f"idle-{i}"),))
             for i, ch in enumerate(channels)]
    try:
        time.sleep(3)  # every stream admitted and settled
        alive = sum(1 for c in calls if c.is_active())
        busy = server_cpu_percent(server.pid, seconds)
    finally:
        release.set()
        for ch in channels:
            ch.close()
    return (f"{alive} idle Infer streams held {seconds:g} s: server CPU {busy:.1f}% of one core "
            f"(no stream: {quiet:.1f}%)")


def loadtest(bundle: str, target: str, agents: int, a: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "splitpoint", "loadtest", "--bundle", bundle, "--target", target, "--insecure",
           "--agents", str(agents), "--fps", str(a.fps), "--split", str(a.split), "--duration", str(a.duration),
           "--json", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def row(name: str, r: dict) -> str:
    lat = r["latency_ms"] or {"p50": 0, "p95": 0, "p99": 0}
    refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "-"
    lost = sum(r["stream_failures"].values()) + r["unanswered"]
    shares = " / ".join(f"{n / max(1, r['answered']):.0%}" for _, n in sorted(r["replicas"].items()))
    per = r["per_agent_answered"]
    return (f"| {name} | {r['sent']} | {r['frames_per_s']:.1f} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
            f"{lat['p99']:.1f} | {refused} | {lost} | {min(per)}-{max(per)} | {shares} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--agents", default="1,10,50,100,200")
    ap.add_argument("--replicas", type=int, default=30, help="agents of the three-replica run")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--split", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--idle-streams", type=int, default=256, help="streams of the idle stage (0 = skip it)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    server, address = start_cloud(a.bundle, "127.0.0.1:0", out / "cloud.log")
    idle = ""
    try:
        if a.idle_streams > 0:
            idle = idle_streams_cpu(server, address, a.idle_streams)
            print(idle, flush=True)
        for n in (int(x) for x in a.agents.split(",")):
            rows.append(row(f"{n} agents, 1 server", loadtest(a.bundle, address, n, a, out / f"one-{n}.json")))
            print(rows[-1], flush=True)
    finally:
        stop([server])
    servers = [start_cloud(a.bundle, f"127.0.0.{i}:0", out / f"cloud-{i}.log") for i in (1, 2, 3)]
    try:
        target = ",".join(addr for _, addr in servers)
        rows.append(row(f"{a.replicas} agents, 3 replicas", loadtest(a.bundle, target, a.replicas, a,
                                                                      out / "three.json")))
    finally:
        stop([p for p, _ in servers])
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    print("| run | frames sent | answered/s | p50 ms | p95 ms | p99 ms | refused | lost | answered per agent | replica shares |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    if idle:
        print(f"\n{idle}")


if __name__ == "__main__":
    main()
