"""The Edge TPU compile step: run edgetpu_compiler on one int8 head and record what it says.

The compiler (x86-64 Linux only) writes `<head>_edgetpu.tflite` and its operation
log `<head>_edgetpu.log` to the output directory and prints a summary on stdout:

    Edge TPU Compiler version 16.0.384591198
    ...
    Number of Edge TPU subgraphs: 1
    Total number of operations: 31
    Operation log: head_3_edgetpu.log

and, only when some operations stay on the CPU,

    Number of operations that will run on Edge TPU: 289
    Number of operations that will run on CPU: 5

followed (with -s) by the operator table the log also holds: `OPERATOR  COUNT  STATUS`,
STATUS "Mapped to Edge TPU" or why not. Without the two "will run on" lines every
operation was mapped. We keep the version, the subgraph count, the operations on
each side and the operators left on the CPU.

A head with several outputs (a detector's maps, a multi-tensor cut's tensors) is
compiled the same way; the compiled model must still have the head's inputs and
outputs, one for one, or the edge would read the wrong tensor: a compiled head that
does not is refused. A missing or failing compiler never fails partitioning: the
split's `edgetpu` block says why it was not compiled.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger("splitpoint.partition")

EDGETPU_COMPILER = "edgetpu_compiler"

_VERSION = re.compile(r"Edge TPU Compiler version ([\w.]+)")
_RUN_ON = re.compile(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)")
_TOTAL = re.compile(r"Total number of operations:\s*(\d+)")
_SUBGRAPHS = re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)")
#: a row of the operator table: "CONV_2D                        5          Mapped to Edge TPU"
_OPERATOR_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", re.MULTILINE)
_MAPPED = "Mapped to Edge TPU"


def find_edgetpu_compiler() -> str | None:
    return shutil.which(EDGETPU_COMPILER)


def parse_compiler_output(text: str) -> dict[str, Any]:
    """The compiler's stdout (or its operation log) -> version, subgraphs and operation counts."""
    version = _VERSION.search(text)
    run_on = {where: int(n) for where, n in _RUN_ON.findall(text)}
    total = _TOTAL.search(text)
    subgraphs = _SUBGRAPHS.search(text)
    on_cpu: dict[str, int] = {}
    for op, count, status in _OPERATOR_ROW.findall(text):
        if status != _MAPPED:
            on_cpu[op] = on_cpu.get(op, 0) + int(count)
    out: dict[str, Any] = {"compiler_version": version.group(1) if version else ""}
    if run_on:
        out["ops_on_edgetpu"] = run_on.get("Edge TPU", 0)
        out["ops_on_cpu"] = run_on.get("CPU", 0)
    elif total:  # the compiler prints the per-device lines only when some operations stay on the CPU
        out["ops_on_edgetpu"] = int(total.group(1)) - sum(on_cpu.values())
        out["ops_on_cpu"] = sum(on_cpu.values())
    else:
        out["ops_on_edgetpu"] = out["ops_on_cpu"] = 0
    if subgraphs:
        out["edgetpu_subgraphs"] = int(subgraphs.group(1))
    if on_cpu:
        out["cpu_operators"] = dict(sorted(on_cpu.items()))
    return out


def tflite_io(path: Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(input shapes, output shapes) of a .tflite model's main subgraph, read from its flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    g = m.Subgraphs(0)

    def shape(i: int) -> tuple[int, ...]:
        return tuple(int(d) for d in g.Tensors(i).ShapeAsNumpy())

    return ([shape(g.Inputs(j)) for j in range(g.InputsLength())],
            [shape(g.Outputs(j)) for j in range(g.OutputsLength())])


#: one head's compile may take this long (a large head compiles in well under a minute)
COMPILE_TIMEOUT_S = 600.0

#: compilers that timed out in this process: every later head would wait its full timeout too (a
#: partition of 60 heads stalled silently for hours), so they are not run again. A set of paths,
#: only added to: a worker process builds its splits one after another.
_TIMED_OUT: set[str] = set()


def compile_edgetpu(compiler: str | None, head: Path, out_dir: Path) -> dict[str, Any]:
    """Run edgetpu_compiler on one head; record how many ops it mapped where."""
    if compiler is None:
        return {"status": "not compiled", "reason": f"{EDGETPU_COMPILER} not found on PATH (it runs on x86-64 Linux only)"}
    if compiler in _TIMED_OUT:
        return {"status": "failed", "reason": f"{compiler} not run: it ran out of its {COMPILE_TIMEOUT_S:.0f} s on an "
                                              "earlier head"}
    try:
        proc = subprocess.run([compiler, "-s", "-o", str(out_dir), str(head)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        _TIMED_OUT.add(compiler)
        log.warning("%s ran %.0f s on %s without finishing: stopped; the heads left are not compiled",
                    compiler, COMPILE_TIMEOUT_S, head.name)
        return {"status": "failed", "reason": f"{compiler} did not finish in {COMPILE_TIMEOUT_S:.0f} s"}
    except OSError as exc:
        return {"status": "failed", "reason": f"{compiler}: {exc}"}
    compiled = out_dir / (head.stem + "_edgetpu.tflite")
    if proc.returncode != 0 or not compiled.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {' | '.join(tail)}"}
    try:
        want, got = tflite_io(head), tflite_io(compiled)
    except Exception as exc:  # a truncated or foreign flatbuffer raises anything from struct to IndexError
        compiled.unlink(missing_ok=True)
        return {"status": "failed", "reason": f"{compiled.name} is not a readable TFLite model: {exc}"}
    if sorted(want[0]) != sorted(got[0]) or sorted(want[1]) != sorted(got[1]):
        compiled.unlink(missing_ok=True)  # never offered to the edge: it would read the wrong tensors
        return {"status": "failed",
                "reason": f"{compiled.name} has inputs {got[0]} and outputs {got[1]}; the head has {want[0]} and {want[1]}"}
    if not (_TOTAL.search(proc.stdout) or _RUN_ON.search(proc.stdout)):
        # it wrote a model but not the compiler's summary: nothing says what runs on the Edge TPU
        # (it was recorded as 'compiled, 0/0 ops'), so the model is not offered to the edge
        compiled.unlink(missing_ok=True)
        said = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:]) or "nothing"
        return {"status": "failed", "reason": f"{compiler} wrote {compiled.name} but not edgetpu_compiler's operation "
                                              f"counts (it printed: {said[:200]})"}
    return {"status": "compiled", **parse_compiler_output(proc.stdout)}
