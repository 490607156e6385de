"""What splitpoint adds per frame beyond compute and wire time (`splitpoint bench`, "overhead").

Method (in one process, over loopback, no link emulation, no model):

* **splitpoint path**: what the agent and the server do for a frame whose tail costs
  nothing. The agent side encodes an int8 cut tensor with its quantization
  (`codec.encode`), builds the `InferRequest` and sends it on an `Infer` stream
  (`edge_node.client.InferStream`); the real `OffloadServicer` reads it on its reader
  thread, validates, decodes and dequantizes it (`validate_request`), queues it on a real
  `TailExecutor` whose tail returns ten zeros without looking at its input (no compute),
  encodes the answer with its timing and load, and the agent decodes the scores
  (`codec.decode(...).dequantized()`). Time: from the start of encoding to the decoded
  scores, one frame in flight.
* **raw gRPC**: the same bytes (a prebuilt `bytes` of the same length) sent on a bare
  gRPC bidirectional stream of the same server and channel options, whose handler
  answers each message with bytes as long as splitpoint's answer; the client uses the
  same queue-and-receiver-thread pattern as `InferStream`.
* **added cost** = median(splitpoint) - median(raw). The two are measured in alternating
  blocks, so drift on the machine hits both. Both include gRPC's own work (HTTP/2 framing,
  the copy into and out of the transport) and Python's thread hand-offs of a stream;
  the difference is what splitpoint's code adds: tensor encode, validation, decode,
  dequantize (int8 -> float32 of every element), the executor queue and its thread
  hand-off, the answer's encode/decode and bookkeeping.

Micro-timings of the pieces (encode, validate+decode+dequantize, answer encode, answer
decode) are measured alone as well, to say where the time goes.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np

from splitpoint.bench.results import OverheadResult, PathTimes

#: the cut tensor of the measurement: VGG16's block3_pool shape, 200,704 bytes of int8
DEFAULT_SHAPE = (1, 28, 28, 256)
_DIGEST = "sha256:bench-overhead"
_RAW_METHOD = "/splitpoint.bench.Raw/Echo"


class _ZeroTail:
    input_shape = DEFAULT_SHAPE[1:]

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 10), np.float32)


class _ZeroTails:
    """Stands in for TailPool: every split's tail answers zeros at once."""

    def get(self, split: int) -> _ZeroTail:
        return _ZeroTail()

    def warm(self) -> list[int]:
        return [0]


def _manifest(shape: tuple[int, ...], quant: Any) -> Any:
    """The parts of a Manifest the servicer reads: one split whose cut is `shape` int8, one output."""
    from splitpoint.bundle import TensorSpec

    cut = TensorSpec("cut", tuple(shape), "int8", quant)
    spec = SimpleNamespace(split=1, cut=[cut], tail=object(), head=object(), wire_bytes=cut.nbytes)

    def split(k: int) -> Any:
        if k != 1:
            raise KeyError(k)
        return spec

    return SimpleNamespace(model_digest=_DIGEST, model_name="bench-overhead", split_ids=[1], split=split,
                           num_layers=2, splits=[spec], outputs=[TensorSpec("output", (1, 10), "float32", None)])


@dataclass
class _Server:
    server: grpc.Server
    address: str
    executor: Any


def _start_server(manifest: Any, response_bytes: int) -> _Server:
    from prometheus_client import CollectorRegistry

    from cloud_server.executor import TailExecutor
    from cloud_server.servicer import CloudMetrics, OffloadServicer
    from splitpoint.v1 import offload_pb2_grpc

    executor = TailExecutor(_ZeroTails(), workers=2, max_batch=8)  # type: ignore[arg-type]
    servicer = OffloadServicer(manifest, executor, max_tensor_bytes=32 << 20, max_message_bytes=32 << 20,
                               metrics=CloudMetrics(CollectorRegistry()))
    answer = b"\0" * response_bytes

    def echo(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in request_iterator:
            yield answer

    raw = grpc.method_handlers_generic_handler(
        "splitpoint.bench.Raw", {"Echo": grpc.stream_stream_rpc_method_handler(echo)})
    options = [("grpc.max_receive_message_length", 32 << 20), ("grpc.max_send_message_length", 32 << 20),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    offload_pb2_grpc.add_OffloadServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((raw,))
    port = server.add_insecure_port("127.0.0.1:0")  # loopback only
    server.start()
    return _Server(server, f"127.0.0.1:{port}", executor)


class _RawStream:
    """A bare bidirectional stream of bytes, driven like InferStream (queue in, thread out)."""

    def __init__(self, channel: grpc.Channel, on_response: Any):
        self._requests: queue.Queue = queue.Queue()
        call = channel.stream_stream(_RAW_METHOD)  # no serializers: bytes in, bytes out
        self._call = call(self._iter(), timeout=600)
        self._thread = threading.Thread(target=self._receive, args=(on_response,), daemon=True)
        self._thread.start()

    def _iter(self) -> Iterator[bytes]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def _receive(self, on_response: Any) -> None:
        try:
            for resp in self._call:
                on_response(resp)
        except grpc.RpcError:
            pass

    def send(self, data: bytes) -> None:
        self._requests.put(data)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(5.0)


def _stats(ms: list[float]) -> PathTimes:
    a = np.asarray(ms)
    return PathTimes(frames=len(ms), median_ms=round(float(np.median(a)), 4), p90_ms=round(float(np.percentile(a, 90)), 4),
                     mean_ms=round(float(a.mean()), 4), min_ms=round(float(a.min()), 4))


def _micro(fn: Any, runs: int) -> float:
    """Median microseconds of fn()."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return round(statistics.median(times), 1)


def measure_overhead(shape: tuple[int, ...] = DEFAULT_SHAPE, frames: int = 300, warmup: int = 30,
                     block: int = 50, time_limit_s: float = 120.0) -> OverheadResult:
    """Added cost per frame of splitpoint's path over a raw gRPC stream for one int8 tensor of `shape`."""
    from cloud_server.validation import validate_request
    from edge_node.client import OffloadClient
    from splitpoint.codec import Quantization, decode, encode
    from splitpoint.security import ClientSecurity
    from splitpoint.v1 import offload_pb2

    rng = np.random.default_rng(0)
    arr = rng.integers(-128, 128, size=shape, dtype=np.int8)
    quant = Quantization.per_tensor(0.05, -3)
    manifest = _manifest(shape, quant)

    def request(i: int) -> offload_pb2.InferRequest:
        req = offload_pb2.InferRequest(frame_id=i, model_digest=_DIGEST, split=1, capture_time_unix_ns=time.time_ns(),
                                       budget_ms=2000)
        req.tensors.append(encode(arr, name="cut", quantization=quant))
        return req

    # what an answer looks like on the wire (raw stream answers as many bytes)
    sample = offload_pb2.InferResponse(frame_id=1, split=1)
    sample.outputs.append(encode(np.zeros((1, 10), np.float32), name="output"))
    sample.timing.queue_ms, sample.timing.compute_ms, sample.timing.total_ms, sample.timing.batch_size = 0.1, 0.01, 0.5, 1
    sample.load.queued, sample.load.workers, sample.load.streams = 0, 2, 1
    response_bytes = sample.ByteSize()
    srv = _start_server(manifest, response_bytes)
    client = OffloadClient(srv.address, security=ClientSecurity(insecure=True))  # plaintext: loopback only
    done = threading.Event()
    errors: list[str] = []

    def on_sp(stream: Any, resp: offload_pb2.InferResponse) -> None:
        if resp.HasField("error") and resp.error.code:
            errors.append(resp.error.message)
        else:
            decode(resp.outputs[0]).dequantized()
        done.set()

    def on_end(stream: Any, error: Any) -> None:
        if error is not None:
            errors.append(str(error))
        done.set()

    sp_stream = client.open_stream(600.0, on_sp, on_end)
    raw_stream = _RawStream(client.channel, lambda _resp: done.set())
    payload = arr.tobytes()
    sp_ms: list[float] = []
    raw_ms: list[float] = []
    deadline = time.monotonic() + time_limit_s
    try:
        def one_sp(i: int) -> float:
            done.clear()
            t0 = time.perf_counter()
            sp_stream.send(request(i))
            if not done.wait(10.0):
                raise TimeoutError("no answer within 10 s on the splitpoint stream")
            return (time.perf_counter() - t0) * 1000

        def one_raw() -> float:
            done.clear()
            t0 = time.perf_counter()
            raw_stream.send(payload)
            if not done.wait(10.0):
                raise TimeoutError("no answer within 10 s on the raw stream")
            return (time.perf_counter() - t0) * 1000

        for i in range(warmup):
            one_sp(i)
            one_raw()
        i = warmup
        while len(sp_ms) < frames and time.monotonic() < deadline:
            for _ in range(block):
                sp_ms.append(one_sp(i))
                i += 1
            for _ in range(block):
                raw_ms.append(one_raw())
        if errors:
            raise RuntimeError(f"splitpoint path failed: {errors[:3]}")
        # pieces, alone
        req = request(0)
        wire = req.SerializeToString()
        resp_sample = sample
        micro = {
            "encode_request_us": _micro(lambda: request(0), 200),
            "validate_decode_dequantize_us": _micro(lambda: validate_request(req, manifest, 32 << 20), 200),
            "request_serialize_us": _micro(req.SerializeToString, 200),
            "request_parse_us": _micro(lambda: offload_pb2.InferRequest.FromString(wire), 200),
            "answer_encode_us": _micro(lambda: encode(np.zeros((1, 10), np.float32), name="output"), 200),
            "answer_decode_us": _micro(lambda: decode(resp_sample.outputs[0]).dequantized(), 200),
        }
    finally:
        sp_stream.close()
        raw_stream.close()
        client.close()
        srv.server.stop(1.0).wait(5.0)
        srv.executor.close(timeout=2.0)
    sp, raw = _stats(sp_ms), _stats(raw_ms)
    return OverheadResult(
        tensor_shape=list(shape), tensor_bytes=int(arr.nbytes), answer_bytes=response_bytes, splitpoint=sp,
        raw_grpc=raw, added_ms=round(sp.median_ms - raw.median_ms, 4), pieces=micro,
        method="in-process loopback; splitpoint Infer stream with a zero-cost tail vs a raw gRPC bytes stream "
               "of the same sizes; medians of alternating blocks")


if __name__ == "__main__":  # python -m splitpoint.bench.overhead
    import argparse
    import dataclasses
    import json

    argparse.ArgumentParser(prog="python -m splitpoint.bench.overhead",
                            description="measure the agent's and the server's added cost per frame over a raw gRPC "
                                        "stream on loopback (docs/benchmarks.md); prints the figures as JSON").parse_args()

    print(json.dumps(dataclasses.asdict(measure_overhead()), indent=2))
