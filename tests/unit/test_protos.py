"""The generated stubs in splitpoint/v1 must be what scripts/gen_protos.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the stubs")
    # In a child process: protoc inside a process that already loaded TensorFlow can crash.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "splitpoint" / "v1").glob("*_pb2*.py*")}
    committed = {p.name: p.read_bytes() for p in (ROOT / "splitpoint" / "v1").glob("*_pb2*.py*")}
    assert fresh.keys() == committed.keys(), "stub files differ: run python scripts/gen_protos.py"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated stubs {stale}: run python scripts/gen_protos.py and commit"


def test_wire_contract_has_the_promised_surface() -> None:
    from splitpoint.v1 import offload_pb2, tensor_pb2

    service = offload_pb2.DESCRIPTOR.services_by_name["Offload"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods["Infer"] == (True, True)
    assert {"Describe", "Probe", "InferFrame"} <= methods.keys()
    tensor_fields = set(tensor_pb2.Tensor.DESCRIPTOR.fields_by_name)
    assert {"name", "dtype", "shape", "data", "quantization", "compression"} <= tensor_fields
    req_fields = set(offload_pb2.InferRequest.DESCRIPTOR.fields_by_name)
    assert {"frame_id", "model_digest", "split", "tensors", "budget_ms"} <= req_fields
