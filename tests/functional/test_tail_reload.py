"""A tail evicted under `warm_tails` and loaded again is checked against the manifest, as at
start: a `.keras` replaced while the server ran (same shapes, other weights) answered frames
with wrong scores and status OK. Now the frame fails FAILED_PRECONDITION naming the file and
saying the bundle changed on disk, and the server logs it (once, not per frame)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import grpc
import pytest
from helpers import running_server, zero_frame

from splitpoint.bundle import load_bundle
from splitpoint.v1 import offload_pb2_grpc

RPC_TIMEOUT_S = 30.0


def other_weights(path: Path) -> None:
    """Rewrite the .keras at `path` as a valid model of the same shapes with other weights."""
    import keras

    model = keras.models.load_model(path, compile=False)
    model.set_weights([w + 1.0 for w in model.get_weights()])
    model.save(path)


@pytest.mark.parametrize("change", ["other weights", "broken file"])
def test_a_tail_changed_on_disk_is_refused_when_loaded_again(digits_bundle: Path, tmp_path: Path, change: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    m = load_bundle(bundle, verify=False).manifest
    first, second = [s.split for s in m.splits if s.tail is not None][:2]
    tail = bundle / m.split(first).tail.path  # type: ignore[union-attr]
    with running_server(bundle, warm_tails=1) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = offload_pb2_grpc.OffloadStub(channel)
        stub.InferFrame(zero_frame(bundle, first), timeout=RPC_TIMEOUT_S)
        stub.InferFrame(zero_frame(bundle, second), timeout=RPC_TIMEOUT_S)  # evicts `first`
        assert server.tails.warm() == [second]
        if change == "other weights":
            other_weights(tail)
        else:
            tail.write_bytes(b"not a zip")
        with caplog.at_level(logging.ERROR, logger="splitpoint.runtime.tails"):
            for _ in range(3):  # every frame refused; the server says so once
                with pytest.raises(grpc.RpcError) as err:
                    stub.InferFrame(zero_frame(bundle, first), timeout=RPC_TIMEOUT_S)
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert str(tail) in err.value.details()
                assert "the bundle changed on disk" in err.value.details()
                assert "restart the server with the new bundle" in err.value.details()
        logged = [r.getMessage() for r in caplog.records if r.name == "splitpoint.runtime.tails"]
        assert len(logged) == 1 and str(tail) in logged[0] and "changed on disk" in logged[0]
        assert server.tails.warm() == [second]
        # the other split still serves
        stub.InferFrame(zero_frame(bundle, second), timeout=RPC_TIMEOUT_S)
        # put back: the tail loads again (the failure was not kept past the file)
        shutil.copyfile(digits_bundle / m.split(first).tail.path, tail)  # type: ignore[union-attr]
        stub.InferFrame(zero_frame(bundle, first), timeout=RPC_TIMEOUT_S)
        assert server.tails.warm() == [first]


def test_each_tail_is_hashed_once_at_start_unless_it_changed_meanwhile(digits_bundle: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """load_bundle hashes every tail; the preload that follows does not hash them again (a big
    bundle's tails take seconds each), except a file changed since load_bundle hashed it."""
    import splitpoint.bundle
    from splitpoint.errors import BundleError
    from splitpoint.runtime.tails import TailPool

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle_dir)
    hashed: list[str] = []
    real = splitpoint.bundle.sha256_file
    monkeypatch.setattr(splitpoint.bundle, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    bundle = load_bundle(bundle_dir, side="cloud")
    tails = [s.tail.path for s in bundle.manifest.splits if s.tail is not None]
    names = sorted(Path(t).name for t in tails)
    assert sorted(h for h in hashed if h in names) == names  # (and the validation data)
    hashed.clear()
    TailPool(bundle, preload=True)
    assert hashed == []
    # a tail rewritten between load_bundle and the preload is hashed again, and refused
    bundle = load_bundle(bundle_dir, side="cloud")
    (bundle_dir / tails[0]).write_bytes(b"not a zip")
    hashed.clear()
    with pytest.raises(BundleError, match="bytes, the manifest says"):
        TailPool(bundle, preload=True)
