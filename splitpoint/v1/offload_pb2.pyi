from splitpoint.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferRequest(_message.Message):
    __slots__ = ("frame_id", "model_digest", "split", "tensors", "capture_time_unix_ns", "budget_ms")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    model_digest: str
    split: int
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    capture_time_unix_ns: int
    budget_ms: int
    def __init__(self, frame_id: _Optional[int] = ..., model_digest: _Optional[str] = ..., split: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., capture_time_unix_ns: _Optional[int] = ..., budget_ms: _Optional[int] = ...) -> None: ...

class ServerTiming(_message.Message):
    __slots__ = ("queue_ms", "compute_ms", "total_ms", "batch_size")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    compute_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ServerLoad(_message.Message):
    __slots__ = ("queued", "running", "workers", "streams")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    queued: int
    running: int
    workers: int
    streams: int
    def __init__(self, queued: _Optional[int] = ..., running: _Optional[int] = ..., workers: _Optional[int] = ..., streams: _Optional[int] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("frame_id", "split", "outputs", "timing", "load", "error")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    split: int
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    timing: ServerTiming
    load: ServerLoad
    error: FrameError
    def __init__(self, frame_id: _Optional[int] = ..., split: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., timing: _Optional[_Union[ServerTiming, _Mapping]] = ..., load: _Optional[_Union[ServerLoad, _Mapping]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape", "quantization")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: _tensor_pb2.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    quantization: _tensor_pb2.Quantization
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., quantization: _Optional[_Union[_tensor_pb2.Quantization, _Mapping]] = ...) -> None: ...

class SplitInfo(_message.Message):
    __slots__ = ("split", "cut", "wire_bytes", "warm")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    split: int
    cut: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    wire_bytes: int
    warm: bool
    def __init__(self, split: _Optional[int] = ..., cut: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., wire_bytes: _Optional[int] = ..., warm: _Optional[bool] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("model_name", "model_digest", "num_layers", "splits", "server_version", "max_message_bytes")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_digest: str
    num_layers: int
    splits: _containers.RepeatedCompositeFieldContainer[SplitInfo]
    server_version: str
    max_message_bytes: int
    def __init__(self, model_name: _Optional[str] = ..., model_digest: _Optional[str] = ..., num_layers: _Optional[int] = ..., splits: _Optional[_Iterable[_Union[SplitInfo, _Mapping]]] = ..., server_version: _Optional[str] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload", "response_bytes")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    response_bytes: int
    def __init__(self, payload: _Optional[bytes] = ..., response_bytes: _Optional[int] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("payload", "received_bytes", "server_time_ms", "server_unix_ns")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    received_bytes: int
    server_time_ms: float
    server_unix_ns: int
    def __init__(self, payload: _Optional[bytes] = ..., received_bytes: _Optional[int] = ..., server_time_ms: _Optional[float] = ..., server_unix_ns: _Optional[int] = ...) -> None: ...
