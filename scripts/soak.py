"""A soak: `splitpoint cloud` and `splitpoint edge` on loopback, with months of churn in minutes.

    python scripts/soak.py --bundle BUNDLE --minutes 30 [--fps 25] [--kill-every 45,75] [--out DIR]

The agent reaches the server through a LinkEmulator (splitpoint/linkemu) and runs with mutual
TLS and a token. Meanwhile: the link is cut (an outage of 0.5-4 s) every 3-8 s and its
connections reset every 5-15 s; the server closes connections after 4 s (max_connection_age_s)
and idle streams after 3 s, the agent replaces its streams every 5 s; the server is killed
(SIGKILL) once it has served for a random time in --kill-every seconds and started again (0:
never, to watch the server grow); the agent gets SIGHUP with another [policy] split every
5-10 s; the TLS files of both sides and the agent's token are renewed in place (a new file
renamed over the old) every 3-6 s. At the end the agent gets SIGTERM.

Every 15 s it samples both processes (VmRSS, open fds, sockets, threads), the lines each has
logged, the results log and the files left in the processes' TMPDIR, into DIR/samples.jsonl;
it ends by printing the first and last samples, the churn counted, how long SIGTERM took and
whether every frame has exactly one record. Anything that grows with the churn is a defect
for an agent that runs for months. Keep --fps moderate on a shared machine (the server and
the agent each want most of a core). It needs `cryptography` (splitpoint certs).

To ask where an agent's memory goes: --tracemalloc N runs it under scripts/traced_agent.py,
which starts tracemalloc.start(N) and every --snapshot-every S seconds (60) writes a snapshot
to DIR/tracemalloc/snap-NNNN.tracemalloc and a line to DIR/tracemalloc/memory.jsonl (VmRSS,
the traced total, glibc's mallinfo2, counts of gc-tracked objects by type). Compare two with
    a, b = (tracemalloc.Snapshot.load(p) for p in (FIRST, LAST))
    b.compare_to(a, "traceback")     # filter out tracemalloc's own and traced_agent.py's
Traced memory flat while RSS grows: the growth is native (gRPC's C core, malloc). The
snapshots themselves leave tens of MB free in malloc's arenas (RSS under tracing is not the
field's): --tracemalloc 0 writes memory.jsonl only, no tracing, to watch RSS against malloc. --agent-env
NAME=VALUE sets a variable in the agent's environment only (MALLOC_ARENA_MAX=2, say).
Tracing slows the agent; the default runs it as the field does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitpoint.bundle import load_bundle  # noqa: E402 - after the path fix above
from splitpoint.errors import SplitpointError  # noqa: E402
from splitpoint.linkemu import LinkEmulator  # noqa: E402

SAMPLE_S = 15.0
TOKENS = ("A" * 24, "B" * 24)  # the server accepts both; the agent's file alternates


def proc_stats(pid: int) -> dict[str, int]:
    """VmRSS (kB), open fds, sockets among them and threads of `pid` ({} once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = os.listdir(f"/proc/{pid}/fd")
        socks = sum(1 for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
        return {"rss_kb": int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]),
                "fds": len(fds), "sockets": socks, "threads": len(os.listdir(f"/proc/{pid}/task"))}
    except (OSError, StopIteration):
        return {}


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def renew(path: Path, data: bytes) -> None:
    """Replace `path` as a renewal does: a new file renamed over the old."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(data)
    fresh.chmod(0o600)
    os.replace(fresh, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "tmp").mkdir(exist_ok=True)
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(self.out / "tmp"))
        self.certs = self.out / "certs"
        if not (self.certs / "ca.pem").exists():
            subprocess.run([sys.executable, "-m", "splitpoint", "certs", "-o", str(self.certs), "--server-name",
                            "127.0.0.1", "--clients", "drone-01"], check=True, env=self.env, stdout=subprocess.DEVNULL)
        self.files = {name: self.out / name for name in ("ca.pem", "server.pem", "server.key", "client.pem",
                                                          "client.key", "server.token", "agent.token", "edge.toml")}
        self.originals = {"ca.pem": self.certs / "ca.pem", "server.pem": self.certs / "server.pem",
                          "server.key": self.certs / "server.key", "client.pem": self.certs / "clients/drone-01.pem",
                          "client.key": self.certs / "clients/drone-01.key"}
        for name, original in self.originals.items():
            renew(self.files[name], original.read_bytes())
        renew(self.files["server.token"], "\n".join(TOKENS).encode() + b"\n")
        renew(self.files["agent.token"], TOKENS[0].encode() + b"\n")
        self.split = args.splits[1]
        self.files["edge.toml"].write_text(f'[policy]\nname = "fixed"\nsplit = {self.split}\n')
        self.port = free_port()
        self.counts = dict(server_kills=0, link_cuts=0, link_resets=0, reloads=0, tls_renewals=0, token_renewals=0)
        self.stop = threading.Event()

    def start_server(self) -> subprocess.Popen:
        f = self.files
        return subprocess.Popen(
            [sys.executable, "-m", "splitpoint", "cloud", "--bundle", self.args.bundle, "--listen", f"127.0.0.1:{self.port}",
             "--tls-cert", str(f["server.pem"]), "--tls-key", str(f["server.key"]), "--tls-client-ca", str(f["ca.pem"]),
             "--token-file", str(f["server.token"]), "--max-connection-age-s", "4", "--stream-idle-timeout-s", "3",
             "--splits", ",".join(map(str, self.args.splits)), "--workers", "1", "--grace-s", "1"],
            stdout=open(self.out / "server.log", "ab"), stderr=subprocess.STDOUT, env=self.env)

    def start_agent(self, link: LinkEmulator) -> subprocess.Popen:
        f = self.files
        entry = [sys.executable, "-m", "splitpoint"]
        if self.args.tracemalloc is not None:
            entry = [sys.executable, str(ROOT / "scripts" / "traced_agent.py"), "--frames", str(self.args.tracemalloc),
                     "--every", str(self.args.snapshot_every), "--out", str(self.out / "tracemalloc"), "--"]
        return subprocess.Popen(
            [*entry, "edge", "--config", str(f["edge.toml"]), "--bundle", self.args.bundle,
             "--source", "synthetic:1000000000", "--fps", str(self.args.fps), "--cloud", link.address,
             "--splits", ",".join(map(str, self.args.splits)), "--stream-lifetime-s", "5", "--frame-deadline-ms", "1000",
             "--keepalive-s", "2", "--connect-timeout-s", "2", "--grace-s", "5", "--tls-ca", str(f["ca.pem"]),
             "--tls-cert", str(f["client.pem"]), "--tls-key", str(f["client.key"]), "--token-file", str(f["agent.token"]),
             "--results", str(self.out / "results.jsonl"), "--no-results-fsync"],
            stdout=open(self.out / "agent.log", "ab"), stderr=subprocess.STDOUT,
            env=dict(self.env, **dict(kv.split("=", 1) for kv in self.args.agent_env)))

    def churn(self, link: LinkEmulator, agent: subprocess.Popen) -> None:
        rnd, t0 = random.Random(1), time.monotonic()
        kill_lo, kill_hi = self.args.kill_every
        due = dict(cut=t0 + 3, reset=t0 + 11, reload=t0 + 7, tls=t0 + 5, token=t0 + 6, kill=t0 + kill_lo)
        token = 0
        while not self.stop.wait(0.5):
            now = time.monotonic()
            if now >= due["cut"]:
                link.outage(rnd.uniform(0.5, 4.0))
                self.counts["link_cuts"] += 1
                due["cut"] = now + rnd.uniform(3, 8)
            if now >= due["reset"]:
                link.reset_connections()
                self.counts["link_resets"] += 1
                due["reset"] = now + rnd.uniform(5, 15)
            serving = (self.out / "server.log").read_text(errors="replace").count("listening on")
            if kill_hi > 0 and now >= due["kill"] and serving > self.counts["server_kills"]:
                self.server.send_signal(signal.SIGKILL)
                self.server.wait()
                self.counts["server_kills"] += 1
                time.sleep(rnd.uniform(0.5, 3.0))
                self.server = self.start_server()
                due["kill"] = now + rnd.uniform(kill_lo, kill_hi)
            if now >= due["reload"]:
                a, b = self.args.splits[1], self.args.splits[2]
                self.split = b if self.split == a else a
                self.files["edge.toml"].write_text(f'[policy]\nname = "fixed"\nsplit = {self.split}\n')
                agent.send_signal(signal.SIGHUP)
                self.counts["reloads"] += 1
                due["reload"] = now + rnd.uniform(5, 10)
            if now >= due["tls"]:
                for name in ("client.key", "client.pem", "ca.pem", "server.key", "server.pem"):  # key first
                    renew(self.files[name], self.originals[name].read_bytes())
                self.counts["tls_renewals"] += 1
                due["tls"] = now + rnd.uniform(3, 6)
            if now >= due["token"]:
                token ^= 1
                renew(self.files["agent.token"], TOKENS[token].encode() + b"\n")
                self.counts["token_renewals"] += 1
                due["token"] = now + rnd.uniform(3, 6)

    def sample(self, t: float, agent: subprocess.Popen, link: LinkEmulator) -> dict[str, Any]:
        return dict(t_s=round(t), agent=proc_stats(agent.pid), server=proc_stats(self.server.pid),
                    agent_log_lines=count_lines(self.out / "agent.log"),
                    server_log_lines=count_lines(self.out / "server.log"),
                    records=count_lines(self.out / "results.jsonl"),
                    temp_files=sum(len(files) for _, _, files in os.walk(self.out / "tmp")),
                    link_connections=link.stats()["connections_total"], **self.counts)

    def run(self) -> int:
        self.server = self.start_server()
        samples = open(self.out / "samples.jsonl", "a")
        with LinkEmulator(("127.0.0.1", self.port), uplink=20e6, downlink=50e6, delay_ms=10) as link:
            agent = self.start_agent(link)
            churn = threading.Thread(target=self.churn, args=(link, agent), daemon=True)
            churn.start()
            t0, rows = time.monotonic(), []
            try:
                while time.monotonic() - t0 < self.args.minutes * 60 and agent.poll() is None:
                    time.sleep(SAMPLE_S)
                    rows.append(self.sample(time.monotonic() - t0, agent, link))
                    samples.write(json.dumps(rows[-1]) + "\n")
                    samples.flush()
            except KeyboardInterrupt:
                pass
            finally:
                self.stop.set()
                churn.join(10)
                t = time.monotonic()
                agent.send_signal(signal.SIGTERM)
                try:
                    rc: Any = agent.wait(30)
                except subprocess.TimeoutExpired:
                    rc = "did not end within 30 s"
                    agent.kill()
                took = time.monotonic() - t
                self.server.send_signal(signal.SIGTERM)
                try:
                    self.server.wait(30)
                except subprocess.TimeoutExpired:
                    self.server.kill()
        if not (self.out / "results.jsonl").exists():
            last = (self.out / "agent.log").read_text(errors="replace").strip().splitlines()[-1:]
            print(f"the agent ended before writing a record (exit {rc}): {last[0] if last else 'no output'}")
            return 1
        ids = [json.loads(line)["frame_id"] for line in open(self.out / "results.jsonl")]
        for label, row in (("first", rows[0]), ("last", rows[-1])) if rows else ():
            print(f"{label} sample: {json.dumps(row)}")
        print(f"agent SIGTERM: exit {rc} after {took:.2f} s (grace_s 5)")
        print(f"records: {len(ids)}, frame ids {len(set(ids))} distinct, "
              f"{'0..' + str(max(ids)) if ids else 'none'}, {max(ids, default=-1) + 1 - len(set(ids))} missing")
        return 0 if rc == 0 and len(ids) == len(set(ids)) else 1


def _name_value(text: str) -> str:
    """--agent-env's NAME=VALUE, checked (argparse names the bad one)."""
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE (e.g. MALLOC_ARENA_MAX=2)")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--splits", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="three splits the bundle has: served, and the two the reloads switch between "
                         "(default: its first, one a third in and one two thirds in)")
    ap.add_argument("--kill-every", type=lambda s: tuple(float(x) for x in s.split(",")), default=(45.0, 75.0),
                    help="LO,HI: seconds of serving before each SIGKILL of the server; 0,0: never")
    ap.add_argument("--tracemalloc", type=int, default=None, metavar="N",
                    help="run the agent under scripts/traced_agent.py with tracemalloc.start(N): snapshots and "
                         "memory.jsonl in DIR/tracemalloc; 0: memory.jsonl only, untraced (default: the agent "
                         "as it is run in the field)")
    ap.add_argument("--snapshot-every", type=float, default=60.0, metavar="S",
                    help="with --tracemalloc: seconds between snapshots (default 60)")
    ap.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE", type=_name_value,
                    help="set in the agent's environment only (e.g. MALLOC_ARENA_MAX=2); repeatable")
    ap.add_argument("--out", default=None, help="directory for logs, samples and results (default: a new temp directory)")
    args = ap.parse_args()
    try:
        have = [s.split for s in load_bundle(Path(args.bundle)).manifest.splits]
    except SplitpointError as err:
        ap.error(str(err))
    if args.splits is None:
        args.splits = [have[0], have[len(have) // 3], have[2 * len(have) // 3]]
    if len(args.splits) != 3 or not set(args.splits) <= set(have):
        ap.error(f"--splits {','.join(map(str, args.splits))}: three of the bundle's splits are needed; it has {have}")
    args.out = args.out or tempfile.mkdtemp(prefix="splitpoint-soak-")
    print(f"soak: {args.minutes:g} min in {args.out}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
