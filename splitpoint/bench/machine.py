"""The machine a bench run measured on, and which CPU the edge worker gets."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from splitpoint.errors import ConfigError


def machine_description(pinning: dict[str, Any]) -> dict[str, Any]:
    from scheduler.profiles import device_identity

    ident = device_identity()
    try:
        ident["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n")[0]
        ident["memory"] = meminfo.split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpuset.cpus.effective"):
        try:
            ident[Path(path).name] = Path(path).read_text().strip()
        except OSError:
            pass
    try:  # the profile's "cpu" can be the CPU's model number; keep the model name as well
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                ident["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ident["platform"] = platform.platform()
    ident["pinning"] = pinning
    try:
        import grpc

        ident.setdefault("runtimes", {})["grpcio"] = grpc.__version__
    except ImportError:
        pass
    return ident


def plan_pinning(edge_cpu: int | None) -> dict[str, Any]:
    """Which CPU the edge worker gets and which the harness (server, link) keeps."""
    get = getattr(os, "sched_getaffinity", None)
    if get is None or not hasattr(os, "sched_setaffinity"):
        return {"supported": False, "edge_cpu": None, "server_cpus": None,
                "note": f"CPU affinity is not available on {sys.platform}: the edge worker runs with one LiteRT "
                        "thread but may share cores with the server"}
    allowed = sorted(get(0))
    if edge_cpu is None:
        edge_cpu = allowed[-1]
    if edge_cpu not in allowed:
        raise ConfigError("--edge-cpu", edge_cpu, f"not one of the CPUs this process may use: {allowed}")
    others = [c for c in allowed if c != edge_cpu]
    note = (f"edge worker on CPU {edge_cpu}; server, link emulator and harness on CPUs {others}"
            if others else f"only CPU {edge_cpu} is available: edge and server share it")
    return {"supported": True, "allowed": allowed, "edge_cpu": edge_cpu, "server_cpus": others or allowed, "note": note}


def pin_harness(edge_cpu: int | None) -> dict[str, Any]:
    """Plan the pinning and move this process (the server's side) onto the server's CPUs."""
    pinning = plan_pinning(edge_cpu)
    if pinning.get("supported") and pinning.get("server_cpus"):
        try:  # before TensorFlow and the server start their threads: they inherit it
            os.sched_setaffinity(0, set(pinning["server_cpus"]))
            pinning["server_applied"] = True
        except OSError as exc:
            pinning["server_applied"] = False
            pinning["note"] += f" (harness pinning refused: {exc})"
    return pinning


#: where benches claim their edge CPUs: one directory for every user and every TMPDIR of the
#: machine (a per-user TMPDIR let two benches pin one CPU); the system's temp directory where
#: there is no /tmp
LOCK_DIR = "/tmp"


class EdgeCpuClaim:
    """This bench's claim on its edge worker's CPU, held until `release` (or the process ends: the
    kernel drops a flock with its last descriptor, so a killed bench leaves no stale claim).

    Two benches at once pinned their edge workers to the same CPU (the last allowed one, by
    default), each measuring the other's heads, and both exited 0; at one --json the later
    overwrote the earlier's figures. The claim is a lock file per CPU in LOCK_DIR, shared by every
    user's benches on the machine. /tmp is everyone's: the file is opened without following a
    symlink, and written (its holder's pid) only when it is a regular file of this user's."""

    def __init__(self, cpu: int, lock_dir: str | None = None):
        self.cpu = cpu
        if lock_dir is None:
            from splitpoint import scratch_dir

            lock_dir = LOCK_DIR if os.path.isdir(LOCK_DIR) else scratch_dir.shared_dir()
        self.path = Path(lock_dir) / f"splitpoint-bench-cpu{cpu}.lock"
        self._fd: int | None = None

    def take(self) -> EdgeCpuClaim:
        """Claimed, or ConfigError naming the bench that holds the CPU. A lock file that cannot be
        opened for writing (another user's) is locked read-only; one that cannot be opened at all
        (a symlink planted there, a directory) leaves the CPU unclaimed rather than the bench refused."""
        import fcntl
        import stat

        flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o666)
        except OSError:
            try:
                fd = os.open(self.path, os.O_RDONLY | flags)
            except OSError:
                return self
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return self
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise ConfigError("--edge-cpu", self.cpu, f"another `splitpoint bench`{holder} has its edge worker on "
                                                      "this CPU: two benches on one core measure each other's "
                                                      "heads; wait for it to end, or give --edge-cpu another CPU "
                                                      f"(lock: {self.path})") from None
        if st.st_uid == os.geteuid() and st.st_nlink == 1:  # ours, and no hard link to another file
            try:  # who holds it, for the next bench's message
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})"
