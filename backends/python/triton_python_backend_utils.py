"""The `triton_python_backend_utils` API that models written for Triton's python backend use.

Importable as `triton_python_backend_utils` once the python backend is loaded (it registers
this module under that name), and as `backends.python.triton_python_backend_utils`.
Names, signatures and behaviour follow Triton's python backend.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import numpy as np

from server.tensors import datatypes
from server.tensors.bytes_codec import deserialize_bytes_tensor as _deserialize_bytes
from server.tensors.bytes_codec import serialize_bytes_tensor as _serialize_bytes

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
    "TYPE_BF16": datatypes.BY_WIRE_NAME["BF16"].numpy_dtype.type,
}

# TRITONSERVER_DataType numbers, as returned by Tensor.triton_dtype().
_WIRE_TO_CODE = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
    "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13, "BF16": 14,
}
_CODE_TO_WIRE = {code: wire for wire, code in _WIRE_TO_CODE.items()}


def triton_string_to_numpy(triton_type_string: str):
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type: int):
    wire = _CODE_TO_WIRE.get(data_type)
    if wire is None:
        return None
    if wire == "BOOL":
        return np.bool_
    return datatypes.BY_WIRE_NAME[wire].numpy_dtype.type


def numpy_to_triton_type(data_type) -> int | None:
    try:
        return _WIRE_TO_CODE[datatypes.from_numpy_dtype(np.dtype(data_type)).wire_name]
    except Exception:
        return None


def serialize_byte_tensor(input_tensor: np.ndarray):
    """Length-prefixed serialization as a uint8 array, or None for an empty tensor."""
    if input_tensor.size == 0:
        return None
    return np.frombuffer(_serialize_bytes(input_tensor), dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor) -> np.ndarray:
    """Length-prefixed bytes back into a 1-D object array of bytes."""
    return _deserialize_bytes(bytes(encoded_tensor), None, "bytes tensor")


class TritonError:
    """An error for one response; `code` is one of the class constants below."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7
    _CODE_NAMES = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE",
                   "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED")

    def __init__(self, message: str, code: int = 1):
        if message is None:
            raise TypeError("TritonError message must not be None")
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def code_name(self) -> str:
        """Not in Triton's API: the code's name, used to map it to an HTTP/gRPC status."""
        return self._CODE_NAMES[self._code] if 0 <= self._code < len(self._CODE_NAMES) else "UNKNOWN"

    def __str__(self) -> str:
        return self._message


class TritonModelException(Exception):
    """Raised by this API for misuse; a model may raise it too."""

    def message(self) -> str:
        return str(self)


class Tensor:
    """A named tensor holding a numpy array (CPU) or, through DLPack, a torch tensor."""

    def __init__(self, name: str, numpy_array, triton_dtype: int | None = None):
        if not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if numpy_array.dtype.kind in ("U", "S"):
            numpy_array = numpy_array.astype(object)
        elif numpy_array.dtype.kind == "V" and triton_dtype is None and not _is_bf16(numpy_array.dtype):
            raise TritonModelException(
                "Tensor dtype used for numpy_array is not supported by Python backend. Please use np.object_ instead."
            )
        if triton_dtype is not None:
            wanted = triton_to_numpy_type(triton_dtype)
            if wanted is not None and numpy_array.dtype != np.dtype(wanted):
                numpy_array = numpy_array.view(wanted)
        self._name = name
        self._data = numpy_array

    @classmethod
    def _wrap(cls, name: str, data) -> "Tensor":
        tensor = cls.__new__(cls)
        tensor._name = name
        tensor._data = data
        return tensor

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if isinstance(self._data, np.ndarray):
            return self._data
        if not self.is_cpu():
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return _torch_to_numpy(self._data)

    def triton_dtype(self) -> int:
        return _WIRE_TO_CODE[self._wire_datatype()]

    def shape(self) -> list[int]:
        return list(self._data.shape)

    def is_cpu(self) -> bool:
        device = getattr(self._data, "device", None)
        return device is None or str(device) == "cpu"

    def to_dlpack(self):
        """A DLPack capsule sharing this tensor's memory."""
        if self._wire_datatype() == "BYTES":
            raise TritonModelException("DLPack does not support BYTES (string) tensors.")
        return _as_torch(self._data).__dlpack__()

    def __dlpack__(self, stream=None):
        return _as_torch(self._data).__dlpack__(stream=stream) if stream is not None else _as_torch(self._data).__dlpack__()

    def __dlpack_device__(self):
        return _as_torch(self._data).__dlpack_device__()

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor) -> "Tensor":
        """A Tensor sharing memory with a DLPack capsule or any object with `__dlpack__`."""
        import torch.utils.dlpack

        return Tensor._wrap(name, torch.utils.dlpack.from_dlpack(dlpack_tensor))

    def _wire_datatype(self) -> str:
        if isinstance(self._data, np.ndarray):
            return datatypes.from_numpy_dtype(self._data.dtype).wire_name
        return _TORCH_WIRE_NAMES[str(self._data.dtype)]

    def _as_numpy_for_server(self) -> np.ndarray:
        """Not in Triton's API: the data as a host numpy array for the response."""
        if isinstance(self._data, np.ndarray):
            return self._data
        return _torch_to_numpy(self._data.detach().cpu())


_TORCH_WIRE_NAMES = {
    "torch.bool": "BOOL", "torch.uint8": "UINT8", "torch.uint16": "UINT16", "torch.uint32": "UINT32",
    "torch.uint64": "UINT64", "torch.int8": "INT8", "torch.int16": "INT16", "torch.int32": "INT32",
    "torch.int64": "INT64", "torch.float16": "FP16", "torch.float32": "FP32", "torch.float64": "FP64",
    "torch.bfloat16": "BF16",
}


def _is_bf16(dtype: np.dtype) -> bool:
    return dtype == datatypes.BY_WIRE_NAME["BF16"].numpy_dtype


def _as_torch(data):
    import torch

    if not isinstance(data, np.ndarray):
        return data
    if _is_bf16(data.dtype):
        return torch.from_numpy(np.ascontiguousarray(data).view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(data))


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.uint16).numpy().view(datatypes.BY_WIRE_NAME["BF16"].numpy_dtype)
    return tensor.numpy()


class InferenceRequest:
    """A request handed to `execute`, or one a model builds to call another model (BLS)."""

    def __init__(self, request_id: str = "", correlation_id=0, inputs=None, requested_output_names=None,
                 model_name: str = "", model_version: int = -1, flags: int = 0, timeout: int = 0,
                 preferred_memory=None, trace=None, parameters=None):
        if inputs is None or requested_output_names is None:
            raise TypeError("InferenceRequest needs 'inputs' and 'requested_output_names'")
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs)
        self._requested_output_names = list(requested_output_names)
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        self._response_sender = None
        self._is_cancelled: Callable[[], bool] = lambda: False

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self):
        return self._correlation_id

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def flags(self) -> int:
        return self._flags

    def set_flags(self, flags: int) -> None:
        self._flags = flags

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        """The request's parameters as a JSON object string."""
        return self._parameters

    def model_name(self) -> str:
        return self._model_name

    def trace(self):
        return None

    def is_cancelled(self) -> bool:
        return self._is_cancelled()

    def set_release_flags(self, flags: int) -> None:
        self._release_flags = flags

    def get_response_sender(self):
        if self._response_sender is None:
            raise TritonModelException(
                "get_response_sender() is only available to decoupled models "
                "(model_transaction_policy { decoupled: true })"
            )
        return self._response_sender

    def exec(self, decoupled: bool = False) -> "InferenceResponse":
        """Run this request on another model of the server (Triton's BLS) and wait for it."""
        if _bls_runner is None:
            raise TritonModelException("BLS requests can only be executed inside the server")
        return _bls_runner(self)

    async def async_exec(self, decoupled: bool = False) -> "InferenceResponse":
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.exec)


class InferenceResponse:
    """The response to one request: output tensors, or an error."""

    def __init__(self, output_tensors=None, error: TritonError | None = None, parameters=None):
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, list):
            raise TritonModelException('"output_tensors" must be a list.')
        self._output_tensors = output_tensors
        self._error = error
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters or {})

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


class InferenceResponseSender:
    """How a decoupled model sends 0..n responses for one request, then the final flag."""

    def __init__(self, deliver: Callable[["InferenceResponse | None", bool], None], is_cancelled: Callable[[], bool]):
        self._deliver = deliver
        self._is_cancelled = is_cancelled

    def send(self, response: "InferenceResponse | None" = None, flags: int = 0) -> None:
        is_final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None and not is_final:
            raise TritonModelException("Inference Response object is needed when the flag is not final.")
        try:
            self._deliver(response, is_final)
        except RuntimeError as exc:
            raise TritonModelException(f"Unable to send response: {exc}") from None

    def is_cancelled(self) -> bool:
        return self._is_cancelled()


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    return next((t for t in model_config.get("input", []) if t["name"] == name), None)


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    return next((t for t in model_config.get("output", []) if t["name"] == name), None)


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


class Logger:
    """Log lines from a model, into the server's log."""

    class LogLevel:
        INFO = 0
        WARNING = 1
        ERROR = 2
        VERBOSE = 3

    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE
    _logger = logging.getLogger("modelgate.python_model")
    _LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.DEBUG}

    @staticmethod
    def log(message: str, level: int = 0) -> None:
        Logger._logger.log(Logger._LEVELS.get(int(level), logging.INFO), message)

    @staticmethod
    def log_info(message: str) -> None:
        Logger.log(message, Logger.INFO)

    @staticmethod
    def log_warn(message: str) -> None:
        Logger.log(message, Logger.WARNING)

    @staticmethod
    def log_error(message: str) -> None:
        Logger.log(message, Logger.ERROR)

    @staticmethod
    def log_verbose(message: str) -> None:
        Logger.log(message, Logger.VERBOSE)


LogLevel = Logger.LogLevel

# Set by the python backend: runs a BLS InferenceRequest through the server's dataplane.
_bls_runner: Callable[[InferenceRequest], InferenceResponse] | None = None

from backends.python.auto_complete_config import ModelConfig  # noqa: E402  (re-exported name)
