"""Converting between the server's requests/responses and triton_python_backend_utils objects.

GPU tensors (torch CUDA tensors a model made with `Tensor.from_dlpack`) stay on their GPU where the receiver is
a python model: the inputs of a BLS request, and the outputs of a response to one (`can_take_device_outputs`).
Every other response leaves here in host memory, as numpy arrays: what the frontends encode.
"""

from __future__ import annotations

import json

import numpy as np
from tritonclient.grpc.model_config_pb2 import ModelConfig

import modelgate.backends.python.triton_python_backend_utils as pb_utils
from modelgate.core.errors import ModelExecutionError, ModelgateError, drop_traceback, error_from_triton_code
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.device_tensors import is_device_tensor

# Request parameters that steer the server itself and are not passed on to the model.
_SERVER_PARAMETERS = {"binary_data_output"}


def to_pb_request(request: InferRequest, config: ModelConfig, version: str) -> pb_utils.InferenceRequest:
    inputs = [pb_utils.Tensor._wrap(t.name, _writable(t.data)) for t in request.inputs.values()]
    wanted = request.requested_output_names or [o.name for o in config.output]
    parameters = {k: v for k, v in request.parameters.items() if k not in _SERVER_PARAMETERS}
    correlation_id = parameters.get("sequence_id", 0)
    pb_request = pb_utils.InferenceRequest(
        request_id=request.id,
        correlation_id=correlation_id,
        inputs=inputs,
        requested_output_names=wanted,
        model_name=request.model_name,
        parameters=json.dumps(parameters) if parameters else "{}",
    )
    stream = request.response_stream
    if stream is not None:
        pb_request._is_cancelled = stream.is_cancelled
        if config.model_transaction_policy.decoupled:
            pb_request._response_sender = _response_sender(request, config, version)
    return pb_request


def _writable(data):
    """A model may change its input arrays in place, as Triton's python backend allows: a read-only array (a
    view of a request's bytes, as the frontends decode raw inputs) is copied; others are the model's already."""
    if isinstance(data, np.ndarray) and not data.flags.writeable:
        return data.copy()
    return data


def _response_sender(request: InferRequest, config: ModelConfig, version: str) -> pb_utils.InferenceResponseSender:
    """A sender that converts each model response and puts it on the request's stream."""
    stream = request.response_stream

    def deliver(pb_response, is_final: bool) -> None:
        response = None if pb_response is None else from_pb_response(pb_response, request, config, version)
        stream.send(response, is_final)

    return pb_utils.InferenceResponseSender(deliver, stream.is_cancelled)


def from_pb_response(pb_response, request: InferRequest, config: ModelConfig, version: str) -> InferResponse:
    """Our response for `request`; problems with what the model returned become its error."""
    response = InferResponse(request.model_name, version, id=request.id)
    if not isinstance(pb_response, pb_utils.InferenceResponse):
        response.error = ModelExecutionError(
            f"model '{request.model_name}' returned {type(pb_response).__name__} instead of an InferenceResponse"
        )
        return response
    if pb_response.has_error():
        error = pb_response.error()
        response.error = error_from_triton_code(error.code_name(), error.message())
        return response
    try:
        response.outputs = _outputs(pb_response, request, config)
        response.parameters = _parameters(pb_response, request.model_name)
    except ModelgateError as exc:
        response.error = drop_traceback(exc)  # a value now: this frame holds `response`, a cycle
    return response


def _parameters(pb_response, model_name: str) -> dict:
    """Response parameters must be strings, integers, floats or booleans, as Triton requires."""
    text = pb_response.parameters()
    if not text or text == "{}":
        return {}
    parameters = json.loads(text)
    for key, value in parameters.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ModelExecutionError(
                f"model '{model_name}' returned response parameter '{key}' of type {type(value).__name__}; "
                "parameters must be strings, numbers or booleans"
            )
    return parameters


def _outputs(pb_response, request: InferRequest, config: ModelConfig) -> list[InferTensor]:
    expected_types = _declared_output_types(config)
    wanted = request.requested_output_names or [o.name for o in config.output]
    by_name = {t.name(): t for t in pb_response.output_tensors()}
    outputs = []
    for name in wanted:
        tensor = by_name.get(name)
        if tensor is None:
            raise ModelExecutionError(
                f"model '{request.model_name}' did not return requested output '{name}'; "
                f"it returned {sorted(by_name) or 'no outputs'}"
            )
        keep_on_device = request.can_take_device_outputs and is_device_tensor(tensor._data)
        outputs.append(_output_tensor(tensor, expected_types.get(name), request.model_name, keep_on_device))
    return outputs


def _output_tensor(tensor, expected: datatypes.DataType | None, model_name: str, keep_on_device: bool) -> InferTensor:
    if keep_on_device:
        return _device_tensor(tensor, expected, model_name, "output")
    data = tensor._as_numpy_for_server()
    actual = datatypes.from_numpy_dtype(data.dtype)
    if expected is not None and expected.wire_name != actual.wire_name:
        raise ModelExecutionError(
            f"model '{model_name}' returned output '{tensor.name()}' as {actual.wire_name} "
            f"but its configuration declares {expected.wire_name}"
        )
    if actual.is_bytes and data.dtype != object:
        data = data.astype(object)
    return InferTensor(tensor.name(), actual.wire_name, tuple(int(d) for d in data.shape), data)


def _device_tensor(tensor, expected: datatypes.DataType | None, model_name: str, kind: str) -> InferTensor:
    """A pb_utils.Tensor holding a torch CUDA tensor, as it is (no copy)."""
    try:
        wire_name = tensor._wire_datatype()
    except KeyError:
        raise ModelExecutionError(
            f"model '{model_name}': {kind} '{tensor.name()}' has dtype {tensor._data.dtype}, which has no Triton datatype"
        ) from None
    if expected is not None and expected.wire_name != wire_name:
        raise ModelExecutionError(
            f"model '{model_name}' returned {kind} '{tensor.name()}' as {wire_name} "
            f"but its configuration declares {expected.wire_name}"
        )
    data = tensor._data.detach()
    return InferTensor(tensor.name(), wire_name, tuple(int(d) for d in data.shape), data)


# The declared output types of the configs seen last, by identity: a config is built once per instance and not
# changed after, and converting each response must not walk it again.
_DECLARED_TYPES: dict[int, tuple[ModelConfig, dict[str, datatypes.DataType]]] = {}


def _declared_output_types(config: ModelConfig) -> dict[str, datatypes.DataType]:
    cached = _DECLARED_TYPES.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    types = {o.name: datatypes.from_config_name(_type_name(o.data_type)) for o in config.output}
    if len(_DECLARED_TYPES) > 64:  # configs of unloaded models: keep the table small
        _DECLARED_TYPES.clear()
    _DECLARED_TYPES[id(config)] = (config, types)
    return types


def _type_name(data_type: int) -> str:
    from tritonclient.grpc.model_config_pb2 import DataType

    return DataType.Name(data_type)


def to_pb_response_for_bls(response: InferResponse) -> pb_utils.InferenceResponse:
    """A BLS caller's view of a response from another model."""
    if response.error is not None:
        code = getattr(pb_utils.TritonError, response.error.triton_code, pb_utils.TritonError.INTERNAL)
        return pb_utils.InferenceResponse([], error=pb_utils.TritonError(response.error.message, code))
    tensors = [pb_utils.Tensor._wrap(o.name, o.data) for o in response.outputs]
    return pb_utils.InferenceResponse(tensors, parameters=response.parameters)


def from_pb_request_for_bls(pb_request: pb_utils.InferenceRequest) -> InferRequest:
    """A BLS request as a server request (validation happens in the dataplane). GPU inputs stay where they are,
    and the caller takes GPU outputs as they come."""
    from modelgate.core.inference_types import RequestedOutput

    inputs = {}
    for tensor in pb_request.inputs():
        if is_device_tensor(tensor._data):
            inputs[tensor.name()] = _device_tensor(tensor, None, pb_request.model_name(), "input")
            continue
        data = tensor._as_numpy_for_server()
        wire = datatypes.from_numpy_dtype(data.dtype).wire_name
        if wire == "BYTES" and data.dtype != object:
            data = data.astype(object)
        inputs[tensor.name()] = InferTensor(tensor.name(), wire, tuple(int(d) for d in data.shape), np.asarray(data))
    version = pb_request._model_version
    return InferRequest(
        model_name=pb_request.model_name(),
        model_version="" if version is None or int(version) < 0 else str(version),
        id=pb_request.request_id(),
        parameters=json.loads(pb_request.parameters() or "{}"),
        inputs=inputs,
        outputs=[RequestedOutput(name) for name in pb_request.requested_output_names()],
        can_take_device_outputs=True,
    )
