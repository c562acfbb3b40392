"""The protocol between the python backend (server process) and a model instance's stub process.

One socket pair per stub carries length-prefixed MessagePack frames of the msgspec Structs below (fields by
position). Tensors travel as their raw bytes (BYTES tensors in Triton's length-prefixed form), written into the
frame once; large ones through shared memory (shm_tensors.py); torch CUDA tensors stay on their GPU and only
a CUDA IPC handle travels (cuda_ipc_tensors.py). Never pickle: request contents come from the network.

Server -> stub: StubInit once, then Execute, Cancel, BlsReturn, Finalize.
Stub -> server: StubReady or StubFailed once, then ExecuteDone per Execute, StreamItem for decoupled responses,
BlsCall for requests the model sends to other models, MetricCall for its custom metrics, Finalized last.
A stub started for a model's auto_complete_config gets AutoComplete instead, answers AutoCompleted or
StubFailed, and exits.
Requests are named by `key`, a number the server gives each request of this stub (request ids may repeat).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from modelgate.backends.python import cuda_ipc_tensors, shm_tensors
from modelgate.backends.python.cuda_ipc_tensors import CudaIpcTensor
from modelgate.core import errors
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor, RequestedOutput
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.device_tensors import is_device_tensor
from modelgate.core.tensors.raw_bytes import array_from_raw, array_to_raw


class _Message(msgspec.Struct, array_like=True):
    """Encoded as an array of its fields in order: both ends run the same code."""


class WireTensor(_Message):
    name: str
    datatype: str  # wire name: FP32, BYTES, ...
    shape: tuple[int, ...]
    data: memoryview  # decoded as a view of the received frame (no copy); empty when in shared memory
    parameters: dict[str, Any] = {}
    shm_name: str = ""  # a large tensor: the file of the stub's shared-memory folder that holds it (shm_tensors)
    cuda: CudaIpcTensor | None = None  # a GPU tensor: its CUDA IPC handle (data is empty)


class WireError(_Message):
    kind: str  # the ModelgateError class name, from _ERRORS
    message: str


class WireRequest(_Message):
    key: int
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    inputs: list[WireTensor]
    outputs: list[str]
    is_streamed: bool  # the request has a response stream: decoupled responses and cancellation
    can_take_device_outputs: bool = False  # InferRequest's: a BLS request, whose caller takes GPU outputs


class WireResponse(_Message):
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    outputs: list[WireTensor]
    error: WireError | None = None


class StubInit(_Message, tag="init"):
    """`shm_folder`: where large tensors go both ways (shm_tensors.py); "" for none."""

    model_name: str
    model_version: int
    instance_name: str
    kind: str
    device_id: int
    model_dir: str
    version_dir: str
    config: bytes  # the ModelConfig protobuf, serialized
    shm_folder: str = ""
    scheduling: str = "normal"  # stub_scheduling.py's policy


class AutoComplete(_Message, tag="auto_complete"):
    """Instead of StubInit: import the model file, run its class's auto_complete_config, answer, exit."""

    model_name: str
    model_dir: str
    version_dir: str
    config: bytes


class StubReady(_Message, tag="ready"):
    pass


class AutoCompleted(_Message, tag="auto_completed"):
    config: bytes


class StubFailed(_Message, tag="failed"):
    message: str


class Execute(_Message, tag="execute"):
    batch: int
    requests: list[WireRequest]


class ExecuteDone(_Message, tag="done"):
    batch: int
    responses: list[WireResponse]
    timings_ns: tuple[int, int, int]  # input, infer, output
    error: str | None = None  # execute itself failed: every request of the batch fails with this


class StreamItem(_Message, tag="stream"):
    key: int
    response: WireResponse | None
    is_final: bool


class Cancel(_Message, tag="cancel"):
    key: int


class BlsCall(_Message, tag="bls"):
    call: int
    request: WireRequest


class BlsReturn(_Message, tag="bls_return"):
    call: int
    response: WireResponse


class MetricCall(_Message, tag="metric"):
    """One operation of the model's custom-metric API (pb_metrics.py), applied by the server."""

    call: int
    family: str
    description: str
    kind: str
    labels: dict[str, str]
    operation: str
    value: float
    buckets: list[float] | None


class MetricReturn(_Message, tag="metric_return"):
    call: int
    value: float | None
    error: str | None = None


class Finalize(_Message, tag="finalize"):
    pass


class Finalized(_Message, tag="finalized"):
    pass


ToStub = StubInit | AutoComplete | Execute | Cancel | BlsReturn | MetricReturn | Finalize
FromStub = StubReady | AutoCompleted | StubFailed | ExecuteDone | StreamItem | BlsCall | MetricCall | Finalized

_ERRORS: dict[str, type[errors.ModelgateError]] = {
    cls.__name__: cls
    for cls in (
        errors.ModelgateError,
        errors.InvalidArgumentError,
        errors.NotFoundError,
        errors.UnavailableError,
        errors.UnsupportedError,
        errors.AlreadyExistsError,
        errors.CancelledError,
        errors.InternalError,
        errors.ModelExecutionError,
    )
}

_encoder = msgspec.msgpack.Encoder()
_to_stub = msgspec.msgpack.Decoder(ToStub)
_from_stub = msgspec.msgpack.Decoder(FromStub)


def encode(message: ToStub | FromStub) -> bytes:
    return _encoder.encode(message)


def decode_to_stub(frame: bytes) -> ToStub:
    return _to_stub.decode(frame)


def decode_from_stub(frame: bytes) -> FromStub:
    return _from_stub.decode(frame)


# --- tensors, requests, responses ------------------------------------------------------------------------


def wire_tensor(tensor: InferTensor, folder: Path | None = None) -> WireTensor:
    """The tensor for a frame: its bytes inside it, or, when large and a shared-memory folder exists, there; a
    torch CUDA tensor as its CUDA IPC handle (its bytes stay on the GPU)."""
    shape = tuple(tensor.shape)
    if is_device_tensor(tensor.data):
        cuda = cuda_ipc_tensors.share(tensor.data)
        return WireTensor(tensor.name, tensor.datatype, shape, memoryview(b""), tensor.parameters, cuda=cuda)
    if folder is not None and shm_tensors.is_large(tensor.data):
        name = shm_tensors.write(folder, tensor.data)
        return WireTensor(tensor.name, tensor.datatype, shape, memoryview(b""), tensor.parameters, name)
    return WireTensor(tensor.name, tensor.datatype, shape, _raw(tensor), tensor.parameters)


def _raw(tensor: InferTensor) -> memoryview:
    if tensor.datatype == "BYTES":
        return memoryview(array_to_raw(tensor.data, "BYTES"))
    # As bytes: memoryview cannot export every numpy dtype (bfloat16).
    return memoryview(np.ascontiguousarray(tensor.data).reshape(-1).view(np.uint8))


def infer_tensor(wire: WireTensor, folder: Path | None = None, writable: bool = False) -> InferTensor:
    """The tensor of a frame: a view of it or of its shared memory, or (writable) one a model may change; a GPU
    tensor copied (on its GPU) into an allocation of this process, which is always writable."""
    datatype = datatypes.from_wire_name(wire.datatype)
    where = f"tensor '{wire.name}'"
    if wire.cuda is not None:
        data = _device_tensor(wire.cuda, wire.shape, where)
    elif wire.shm_name:
        if folder is None or datatype.is_bytes:
            raise ValueError(f"{where}: in shared memory, which this side has not got")
        raw = shm_tensors.read(folder, wire.shm_name, math.prod(wire.shape) * datatype.itemsize, writable)
        data = array_from_raw(raw, datatype, wire.shape, where)  # copy-on-write when writable: no copy here
    else:
        data = array_from_raw(wire.data, datatype, wire.shape, where)
        if writable and not datatype.is_bytes:
            data = data.copy()
    return InferTensor(wire.name, wire.datatype, wire.shape, data, dict(wire.parameters))


def _device_tensor(cuda: CudaIpcTensor, shape: tuple[int, ...], where: str):
    if tuple(cuda.shape) != tuple(shape):
        raise ValueError(f"{where}: GPU tensor of shape {list(cuda.shape)} sent as shape {list(shape)}")
    return cuda_ipc_tensors.open_copy(cuda, where)


def wire_request(key: int, request: InferRequest, folder: Path | None = None) -> WireRequest:
    return WireRequest(
        key,
        request.model_name,
        request.model_version,
        request.id,
        request.parameters,
        [wire_tensor(t, folder) for t in request.inputs.values()],
        request.requested_output_names,
        request.response_stream is not None,
        request.can_take_device_outputs,
    )


def infer_request(wire: WireRequest, folder: Path | None = None, writable: bool = False) -> InferRequest:
    inputs = {t.name: infer_tensor(t, folder, writable) for t in wire.inputs}
    outputs = [RequestedOutput(name) for name in wire.outputs]
    return InferRequest(
        wire.model_name,
        wire.model_version,
        wire.id,
        dict(wire.parameters),
        inputs,
        outputs,
        can_take_device_outputs=wire.can_take_device_outputs,
    )


def wire_response(response: InferResponse, folder: Path | None = None) -> WireResponse:
    error = None if response.error is None else WireError(_error_kind(response.error), response.error.message)
    outputs = [wire_tensor(t, folder) for t in response.outputs]
    return WireResponse(response.model_name, response.model_version, response.id, response.parameters, outputs, error)


def _error_kind(error: errors.ModelgateError) -> str:
    for cls in type(error).__mro__:
        if cls.__name__ in _ERRORS:
            return cls.__name__
    return "ModelExecutionError"


def infer_response(wire: WireResponse, folder: Path | None = None) -> InferResponse:
    error = None if wire.error is None else _ERRORS.get(wire.error.kind, errors.ModelExecutionError)(wire.error.message)
    outputs = [infer_tensor(t, folder) for t in wire.outputs]
    return InferResponse(wire.model_name, wire.model_version, wire.id, dict(wire.parameters), outputs, error)
