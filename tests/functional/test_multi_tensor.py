"""Several outputs and multi-tensor cuts end to end: partition -> real server on port 0 -> outputs.

A small two-output feature-pyramid model (random weights, 32x32) is partitioned with
--max-cut-tensors 4. Every split's head runs here (LiteRT), its tensors go to a real
CloudServer over gRPC, and every output that comes back must equal the split's tail
run locally on the same dequantized tensors, and stay near the float model. The
server must refuse a multi-tensor request with a missing, extra or mis-shaped tensor
with INVALID_ARGUMENT naming the tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import quiet_progress, running_server

from cloud_server.server import CloudServer
from edge_node.heads import EdgeHeads
from edge_node.outputs import cut_request_tensors, decode_outputs, local_outputs
from splitpoint.bundle import Preprocessing, load_bundle
from splitpoint.codec import encode
from splitpoint.runtime.litert import Device
from splitpoint.v1 import offload_pb2, offload_pb2_grpc

RPC_TIMEOUT_S = 20.0


def pyramid_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 1), name="image")
    c1 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    c2 = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(c1)
    c3 = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c3")(c2)
    p3 = layers.Conv2D(8, 1, activation="relu", name="lat3")(c3)
    l2 = layers.Conv2D(8, 1, activation="relu", name="lat2")(c2)
    p2 = layers.Add(name="p2")([layers.UpSampling2D(name="up3")(p3), l2])
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="head")(p2)
    heat = layers.Conv2D(3, 1, activation="sigmoid", name="heatmap")(h)
    size = layers.Conv2D(2, 1, activation="relu", name="size")(h)
    return keras.Model(inp, [heat, size], name="pyramid")


@pytest.fixture(scope="module")
def pyramid_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from splitpoint.models import ModelSource
    from splitpoint.partition import PartitionOptions, partition

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(40, 32, 32, 1), dtype=np.uint8)
    src = ModelSource("pyramid", "test:pyramid", pyramid_model(), Preprocessing(32, 32, 1, 1 / 255, 0.0), [],
                      calibration=frames[:32], validation=frames[32:], trained=False)
    out = tmp_path_factory.mktemp("bundles") / "pyramid"
    partition(src, PartitionOptions(output=out, edgetpu_compiler=None, max_cut_tensors=4), progress=quiet_progress)
    return out


@pytest.fixture(scope="module")
def server(pyramid_bundle: Path) -> Iterator[CloudServer]:
    with running_server(pyramid_bundle) as srv:
        yield srv


@pytest.fixture
def stub(server: CloudServer) -> Iterator[offload_pb2_grpc.OffloadStub]:
    with grpc.insecure_channel(server.address) as ch:
        yield offload_pb2_grpc.OffloadStub(ch)


def test_manifest_lists_every_output_and_multi_tensor_cuts(pyramid_bundle: Path):
    m = load_bundle(pyramid_bundle).manifest
    assert [(t.name, t.shape) for t in m.outputs] == [("heatmap", (1, 8, 8, 3)), ("size", (1, 8, 8, 2))]
    wide = [s for s in m.splits if len(s.cut) > 1]
    assert wide, [(s.split, [t.name for t in s.cut]) for s in m.splits]
    for s in m.splits:
        assert s.wire_bytes == sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in s.cut)
        assert len({t.name for t in s.cut}) == len(s.cut)
    assert m.partition["max_cut_tensors"] == 4
    ks = m.split_ids
    assert ks == sorted(ks) and len(ks) >= 6


def test_every_split_returns_every_output_over_grpc(pyramid_bundle: Path, stub: offload_pb2_grpc.OffloadStub):
    import keras

    bundle = load_bundle(pyramid_bundle)
    m = bundle.manifest
    heads = EdgeHeads(bundle, Device("cpu"))
    raw, _ = bundle.validation_data()
    float_model = keras.models.load_model(pyramid_bundle / "cloud" / "tail_0.keras", compile=False)
    for s in m.splits:
        x = heads.preprocess(raw[0])
        want_float = [np.asarray(o) for o in float_model(x, training=False)]
        out = heads.run(s.split, x)
        if s.tail is None:  # k = K: everything ran here
            got = local_outputs(out, m)
        else:
            req = offload_pb2.InferRequest(frame_id=s.split, model_digest=m.model_digest, split=s.split)
            req.tensors.extend(cut_request_tensors(out, s))
            resp = stub.InferFrame(req, timeout=RPC_TIMEOUT_S)
            assert [t.name for t in resp.outputs] == ["heatmap", "size"]
            got = decode_outputs(resp, m)
            tail = keras.models.load_model(bundle.path(s.tail), compile=False)
            feed = [q.dequantize(a) for a, q in zip(out.arrays, out.quantizations, strict=True)]
            local = tail(feed if len(feed) > 1 else feed[0], training=False)
            local = local if isinstance(local, (list, tuple)) else [local]
            for g, want in zip(got, local, strict=True):
                np.testing.assert_allclose(g, np.asarray(want), atol=1e-4)
        assert [g.shape for g in got] == [t.shape for t in m.outputs]
        for g, f in zip(got, want_float, strict=True):  # int8 cut: near the float model, not equal
            assert np.max(np.abs(g - f)) < 0.25, s.split


def _wide_request(m, heads, raw):
    s = next(s for s in m.splits if len(s.cut) > 1)
    out = heads.run(s.split, heads.preprocess(raw[0]))
    req = offload_pb2.InferRequest(frame_id=1, model_digest=m.model_digest, split=s.split)
    req.tensors.extend(cut_request_tensors(out, s))
    return s, req


def _refused(stub, req) -> str:
    with pytest.raises(grpc.RpcError) as info:
        stub.InferFrame(req, timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details()


def test_server_refuses_missing_extra_and_misshaped_tensors(pyramid_bundle: Path, stub):
    bundle = load_bundle(pyramid_bundle)
    m = bundle.manifest
    heads = EdgeHeads(bundle, Device("cpu"))
    raw, _ = bundle.validation_data()
    s, good = _wide_request(m, heads, raw)
    assert stub.InferFrame(good, timeout=RPC_TIMEOUT_S).outputs  # the unmodified request is served

    missing = offload_pb2.InferRequest()
    missing.CopyFrom(good)
    gone = missing.tensors[-1].name
    del missing.tensors[-1]
    msg = _refused(stub, missing)
    assert repr(gone) in msg and "missing" in msg

    extra = offload_pb2.InferRequest()
    extra.CopyFrom(good)
    extra.tensors.append(encode(np.zeros((1, 2), np.int8), name="bogus"))
    msg = _refused(stub, extra)
    assert "'bogus'" in msg and "not part of split" in msg

    bent = offload_pb2.InferRequest()
    bent.CopyFrom(good)
    name = bent.tensors[0].name
    del bent.tensors[0].shape[:]
    bent.tensors[0].shape.extend([1, 3, 3, 3])
    msg = _refused(stub, bent)
    assert repr(name) in msg and "shape" in msg


def test_profiles_time_multi_tensor_splits(pyramid_bundle: Path):
    from scheduler.profiles import profile_cloud, profile_edge

    bundle = load_bundle(pyramid_bundle)
    m = bundle.manifest
    cloud = profile_cloud(bundle, runs=3, warmup=1)
    edge = profile_edge(EdgeHeads(bundle, Device("cpu")), bundle, runs=3, warmup=1)
    for prof in (cloud, edge):
        assert set(prof.splits) == set(m.split_ids)
        for k, sp in prof.splits.items():
            assert sp.wire_bytes == m.split(k).wire_bytes  # the sum over a multi-tensor cut
    wide = next(s.split for s in m.splits if len(s.cut) > 1)
    assert cloud.splits[wide].latency.median_ms > 0 and edge.splits[wide].latency.median_ms > 0
