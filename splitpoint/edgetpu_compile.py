"""The Edge TPU compile step: run edgetpu_compiler on one int8 head and record what it says.

The compiler (x86-64 Linux only) writes `<head>_edgetpu.tflite` next to its log
`<head>_edgetpu.log` and prints a summary on stdout; from that we keep its version
and how many operations it mapped to the Edge TPU and how many stay on the CPU
(a head with several outputs, or several inputs, is compiled the same way). A
missing or failing compiler never fails partitioning: the split's `edgetpu` block
says why it was not compiled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

EDGETPU_COMPILER = "edgetpu_compiler"

_EDGETPU_OPS = re.compile(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)")


def find_edgetpu_compiler() -> str | None:
    return shutil.which(EDGETPU_COMPILER)


def compile_edgetpu(compiler: str | None, head: Path, out_dir: Path) -> dict[str, Any]:
    """Run edgetpu_compiler on one head; record how many ops it mapped where."""
    if compiler is None:
        return {"status": "not compiled", "reason": f"{EDGETPU_COMPILER} not found on PATH (it runs on x86-64 Linux only)"}
    try:
        proc = subprocess.run(
            [compiler, "-s", "-o", str(out_dir), str(head)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"status": "failed", "reason": f"{compiler}: {exc}"}
    compiled = out_dir / (head.stem + "_edgetpu.tflite")
    counts = {name: int(n) for name, n in _EDGETPU_OPS.findall(proc.stdout)}
    if proc.returncode != 0 or not compiled.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {' | '.join(tail)}"}
    version = re.search(r"Edge TPU Compiler version ([\w.]+)", proc.stdout)
    return {
        "status": "compiled",
        "compiler_version": version.group(1) if version else "",
        "ops_on_edgetpu": counts.get("Edge TPU", 0),
        "ops_on_cpu": counts.get("CPU", 0),
    }
