"""The `triton_python_backend_utils` API that models written for Triton's python backend use.

Importable as `triton_python_backend_utils` once the python backend is loaded (it registers
this module under that name), and as `modelgate.backends.python.triton_python_backend_utils`.
Names, signatures and behaviour follow Triton's python backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar

import numpy as np

from modelgate.backends.python.auto_complete_config import ModelConfig  # noqa: F401  (re-exported name)
from modelgate.backends.python.pb_logger import Logger
from modelgate.backends.python.pb_metrics import Metric, MetricFamily  # noqa: F401  (Triton's names)
from modelgate.backends.python.pb_tensor import Tensor
from modelgate.backends.python.pb_types import (  # noqa: F401  (re-exported names of Triton's API)
    TRITON_STRING_TO_NUMPY,
    TritonModelException,
    numpy_to_triton_type,
    triton_string_to_numpy,
    triton_to_numpy_type,
)
from modelgate.core.tensors.bytes_codec import deserialize_bytes_tensor as _deserialize_bytes
from modelgate.core.tensors.bytes_codec import serialize_bytes_tensor as _serialize_bytes

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2


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
    _CODE_NAMES = (
        "UNKNOWN",
        "INTERNAL",
        "NOT_FOUND",
        "INVALID_ARG",
        "UNAVAILABLE",
        "UNSUPPORTED",
        "ALREADY_EXISTS",
        "CANCELLED",
    )

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


class InferenceRequest:
    """A request handed to `execute`, or one a model builds to call another model (BLS)."""

    def __init__(
        self,
        request_id: str = "",
        correlation_id=0,
        inputs=None,
        requested_output_names=None,
        model_name: str = "",
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory=None,
        trace=None,
        parameters=None,
    ):
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
        self._parameters = _parameters_json(parameters)
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

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        """Run this request on another model of the server (Triton's BLS) and wait for it."""
        return _current_bls_runner()(self)

    async def async_exec(self, decoupled: bool = False) -> InferenceResponse:
        import asyncio

        # The executor's thread does not inherit this context: take the runner along.
        return await asyncio.get_running_loop().run_in_executor(None, _current_bls_runner(), self)


class InferenceResponse:
    """The response to one request: output tensors, or an error."""

    def __init__(self, output_tensors=None, error: TritonError | None = None, parameters=None):
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, list):
            raise TritonModelException('"output_tensors" must be a list.')
        self._output_tensors = output_tensors
        self._error = error
        self._parameters = _parameters_json(parameters)

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

    def __init__(self, deliver: Callable[[InferenceResponse | None, bool], None], is_cancelled: Callable[[], bool]):
        self._deliver = deliver
        self._is_cancelled = is_cancelled

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
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


LogLevel = Logger.LogLevel

# The BLS runner of the instance whose code runs now: the python backend binds it around every call into the
# model (initialize, execute, finalize) from the caller the server lent that instance at load. A context
# variable, so that instances of several models (and several servers in one process) each reach their own.
BLS_RUNNER: ContextVar[Callable[[InferenceRequest], InferenceResponse] | None] = ContextVar("bls_runner", default=None)


# A stub process hosts one instance: its runner also serves threads the model starts itself (they do not inherit
# the context variable). Never set in the server process, where instances of many models share the module.
PROCESS_BLS_RUNNER: Callable[[InferenceRequest], InferenceResponse] | None = None


def _current_bls_runner() -> Callable[[InferenceRequest], InferenceResponse]:
    runner = BLS_RUNNER.get() or PROCESS_BLS_RUNNER
    if runner is None:
        raise TritonModelException(
            "BLS requests can only be executed inside the server, from a model's initialize, execute or "
            "finalize (with isolation 'thread', threads a model starts itself: run them in "
            "contextvars.copy_context())"
        )
    return runner


def _parameters_json(parameters) -> str:
    """Parameters as the JSON text `parameters()` returns; no encoding for the common none."""
    if isinstance(parameters, str):
        return parameters
    return json.dumps(parameters) if parameters else "{}"
