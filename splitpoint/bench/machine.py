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
