"""A head or tail swapped for another split's file, its sha256 and size rewritten in the manifest,
is refused when it is loaded, naming the file, the split and both shapes: the server started,
said its tails were warm, then failed every frame of that split with INTERNAL TypeError (and
left a tail worker hung in TensorFlow, a frame unanswered); the agent failed every frame on a
reshape. A validation archive that is not one is named as such, not a numpy traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import REPO, cli_env, running_server, zero_frame

from splitpoint.bundle import load_bundle
from splitpoint.errors import BundleError, RequestError

RPC_TIMEOUT_S = 30.0


def swapped(digits_bundle: Path, tmp_path: Path, rel: str, other: str | bytes) -> Path:
    """A copy of the bundle whose `rel` is the bundle's file `other` (or these bytes), its manifest's
    digest and size rewritten to match (what a hand-edited bundle, or one assembled from two
    partitions, looks like)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    data = other if isinstance(other, bytes) else (digits_bundle / other).read_bytes()
    (bundle / rel).write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    arts = [manifest["validation"]] + [a for s in manifest["splits"] for a in (s["head"], s["tail"]) if a]
    (art,) = [a for a in arts if a["path"] == rel]
    art["sha256"], art["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitpoint", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=cli_env())


def test_a_tail_of_another_split_is_refused_at_start(digits_bundle: Path, tmp_path: Path) -> None:
    from splitpoint.runtime.tails import TailPool

    bundle = swapped(digits_bundle, tmp_path, "cloud/tail_1.keras", "cloud/tail_2.keras")
    with pytest.raises(BundleError) as err:
        TailPool(load_bundle(bundle, side="cloud"))
    assert str(err.value) == ("cloud/tail_1.keras takes (None, 8, 8, 32), the manifest's split 1 cuts (1, 8, 8, 16): "
                              "the file belongs to another split or bundle; partition again")


def test_a_tail_of_another_bundle_with_other_outputs_is_refused(digits_bundle: Path, tmp_path: Path) -> None:
    from splitpoint.runtime.tails import TailPool

    bundle = swapped(digits_bundle, tmp_path, "cloud/tail_1.keras", "cloud/tail_1.keras")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["outputs"][0]["shape"] = manifest["output"]["shape"] = [1, 12]  # a model of 12 classes
    manifest["model"]["labels"] = [str(i) for i in range(12)]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"^cloud/tail_\d\.keras outputs \(None, 10\), the manifest's model "
                                          r"outputs \(1, 12\): the file belongs to another split"):
        TailPool(load_bundle(bundle, side="cloud"))


def test_the_server_exits_2_naming_the_swapped_tail(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = swapped(digits_bundle, tmp_path, "cloud/tail_1.keras", "cloud/tail_2.keras")
    proc = run_cli("cloud", "--insecure", "--bundle", str(bundle), "--listen", "127.0.0.1:0")
    assert proc.returncode == 2, proc.stderr
    assert "error: cloud/tail_1.keras takes (None, 8, 8, 32), the manifest's split 1 cuts (1, 8, 8, 16)" in proc.stderr
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout


def test_a_tail_loaded_after_start_fails_its_frames_failed_precondition(digits_bundle: Path, tmp_path: Path) -> None:
    """warm_tails = 1 preloads only the last tail: the swapped one is loaded for its first frame."""
    bundle = swapped(digits_bundle, tmp_path, "cloud/tail_1.keras", "cloud/tail_2.keras")
    with running_server(bundle, warm_tails=1) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        from splitpoint.v1 import offload_pb2_grpc

        stub = offload_pb2_grpc.OffloadStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as err:
                stub.InferFrame(zero_frame(bundle, 1), timeout=RPC_TIMEOUT_S)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == (
                "tail of split 1 not loaded: cloud/tail_1.keras takes (None, 8, 8, 32), the manifest's split 1 cuts "
                "(1, 8, 8, 16): the file belongs to another split or bundle; partition again")
        stub.InferFrame(zero_frame(bundle, 2), timeout=RPC_TIMEOUT_S)  # the other splits still serve


def test_a_tail_given_the_wrong_shape_fails_without_hanging_the_next_caller(digits_bundle: Path) -> None:
    """TensorFlow keeps a tf.function's lock when binding its inputs fails: another thread's call
    then waited for ever (a tail worker lost, its frame never answered)."""
    from splitpoint.runtime.tails import TailRunner

    runner = TailRunner(digits_bundle / "cloud/tail_1.keras", 1)
    errors: list[BaseException] = []
    called, done = threading.Event(), threading.Event()

    def wrong_shape() -> None:  # a worker that lives on after its failed call, as a tail worker does
        try:
            runner.run(np.zeros((1, 8, 8, 32), np.float32))
        except BaseException as exc:  # noqa: BLE001 - recorded for the test
            errors.append(exc)
        called.set()
        done.wait(60)

    first = threading.Thread(target=wrong_shape, daemon=True)
    first.start()
    assert called.wait(30)
    second = threading.Thread(target=runner.run, args=(np.zeros((2, *runner.input_shape), np.float32),), daemon=True)
    second.start()
    second.join(30)
    done.set()
    assert not second.is_alive(), "a tail call hung after another thread's call with the wrong shape"
    assert len(errors) == 1 and isinstance(errors[0], RequestError), errors
    assert errors[0].status_code == grpc.StatusCode.INTERNAL and "takes [(8, 8, 16)]" in str(errors[0])


@pytest.mark.parametrize("k, other, said", [
    (7, 6, "edge/head_7.tflite outputs (1, 64), the manifest's split 7 (the whole model) outputs (1, 10)"),
    (2, 1, "edge/head_2.tflite outputs (1, 8, 8, 16), the manifest's split 2 cuts (1, 8, 8, 32)"),
])
def test_a_head_of_another_split_is_refused_at_agent_start(digits_bundle: Path, tmp_path: Path, k: int, other: int,
                                                           said: str) -> None:
    from edge_node.heads import EdgeHeads
    from splitpoint.runtime.litert import Device

    bundle = swapped(digits_bundle, tmp_path, f"edge/head_{k}.tflite", f"edge/head_{other}.tflite")
    with pytest.raises(BundleError) as err:
        EdgeHeads(load_bundle(bundle, side="edge"), Device("cpu"))
    assert str(err.value).startswith(said), err.value
    assert str(err.value).endswith("the file belongs to another split or bundle; partition again")


def test_the_agent_exits_2_naming_the_swapped_head(digits_bundle: Path, tmp_path: Path) -> None:
    bundle = swapped(digits_bundle, tmp_path, "edge/head_7.tflite", "edge/head_6.tflite")
    proc = run_cli("edge", "--bundle", str(bundle), "--source", "synthetic:2", "--results", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 2, proc.stderr
    assert "error: edge/head_7.tflite outputs" in proc.stderr and "Traceback" not in proc.stderr


def test_inspect_and_doctor_refuse_a_swapped_head(digits_bundle: Path, tmp_path: Path) -> None:
    """They checked sha256 only: a head of another split, its digest rewritten, was 'ok' in doctor
    and 'matching' in inspect, then refused by the agent at the start of the flight."""
    from splitpoint.doctor_bundle import check_bundle

    said = "edge/head_2.tflite outputs (1, 8, 8, 16), the manifest's split 2 cuts (1, 8, 8, 32)"
    bundle = swapped(digits_bundle, tmp_path, "edge/head_2.tflite", "edge/head_1.tflite")
    proc = run_cli("inspect", str(bundle))
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    (check, *_) = check_bundle(str(bundle))
    assert check.status == "FAIL" and said in check.detail, check
    good = run_cli("inspect", str(digits_bundle))
    assert good.returncode == 0 and "head files take and make their splits' shapes" in good.stdout, good
    (ok, *_) = check_bundle(str(digits_bundle))
    assert ok.status == "ok" and "each head its split's shapes" in ok.detail, ok


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


@pytest.mark.parametrize("content, said", [
    (b"not an npz\n", "not an npz (zip) archive"),
    (_npz_bytes(frames=np.zeros((2, 8, 8), np.uint8)), "no 'inputs' array; it holds ['frames']"),
    (_npz_bytes(inputs=np.array([{"a": 1}, None], dtype=object)), "its 'inputs' cannot be read"),
    (_npz_bytes(inputs=np.zeros((3, 8, 8), np.uint8), labels=np.array(["a", "b", "c"])), "its 'labels' holds <U1"),
    (_npz_bytes(inputs=np.zeros((3, 8, 8), np.uint8), labels=np.zeros(2, np.int64)), "3 inputs but labels of shape [2]"),
    (_npz_bytes(inputs=np.zeros((0, 8, 8), np.uint8)), "its inputs have shape [0, 8, 8]"),
    (_npz_bytes(inputs=np.zeros((3, 8, 8), np.float32)), "its inputs are float32 values, not the uint8 frames"),
])
def test_a_validation_archive_that_is_not_one_is_named(digits_bundle: Path, tmp_path: Path, content: bytes,
                                                      said: str) -> None:
    rel = "data/validation.npz"
    bundle = swapped(digits_bundle, tmp_path, rel, content)
    with pytest.raises(BundleError) as err:
        load_bundle(bundle, side="edge").validation_data()
    assert str(err.value).startswith(f"{bundle / rel} is not a valid validation archive ("), err.value
    assert said in str(err.value)


def test_the_agent_exits_2_naming_a_validation_archive_that_is_not_one(digits_bundle: Path, tmp_path: Path) -> None:
    rel = "data/validation.npz"
    bundle = swapped(digits_bundle, tmp_path, rel, b"not an npz\n")
    proc = run_cli("edge", "--bundle", str(bundle), "--source", "synthetic:2", "--results", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 2, proc.stderr
    assert f"error: {bundle / rel} is not a valid validation archive (not an npz (zip) archive)" in proc.stderr
    assert "Traceback" not in proc.stderr and "pickled" not in proc.stderr


def test_a_head_with_a_custom_op_is_read_without_its_delegate(tmp_path: Path) -> None:
    """An Edge TPU head is one custom op (edgetpu-custom-op) that only the delegate resolves, and
    only when tensors are allocated: inspect and doctor read its shapes without the delegate.
    A custom op of our own (Digamma, no TFLite builtin) stands in for it."""
    tf = pytest.importorskip("tensorflow")
    from splitpoint.runtime.litert import HeadRunner, head_file_shapes

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
    def custom(x):
        return tf.raw_ops.Digamma(x=x)[:, :4]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([custom.get_concrete_function()])
    converter.allow_custom_ops = True
    path = tmp_path / "custom.tflite"
    path.write_bytes(converter.convert())
    assert head_file_shapes(path) == ([(1, 8, 8, 3)], [(1, 4, 8, 3)])
    with pytest.raises(Exception, match="unresolved custom op"):  # what running it without the delegate does
        HeadRunner(path)
