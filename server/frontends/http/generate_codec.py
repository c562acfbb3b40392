"""Triton's generate extension: flat JSON objects <-> tensors, by the model's metadata.

A request key that names a model input becomes that input (a scalar is one element; an
array gives the element count, spread over the input's variable dimensions the way
Triton does it); `id` and `parameters` keep their meaning; any other key becomes a
request parameter. A response maps each output to a scalar (one element) or a flat
list, and adds the response's parameters as keys.

A decoupled model that sends other than one response to `generate` (an LLM asked to `stream`, say) is
answered as Triton answers it: status 200 and `{"error": ...}` with Triton's words. Triton has sent the
status with the first response (its reply is chunked) before it counts them at the last; clients written
against it, genai-perf among them, read that answer.
"""

from __future__ import annotations

from typing import Any

from modelgate.core.errors import InvalidArgumentError, ModelExecutionError, ResponseCountError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor
from modelgate.core.tensors import datatypes
from modelgate.server.frontends.http.json_tensors import array_to_json, json_to_array


def decode_generate_request(body: dict, model_name: str, model_version: str, metadata: dict) -> InferRequest:
    request = InferRequest(model_name=model_name, model_version=model_version, can_take_output_values=True)
    inputs = {tensor["name"]: tensor for tensor in metadata["inputs"]}
    for key, value in body.items():
        if key == "id":
            request.id = _string(value, "id")
        elif key == "parameters":
            request.parameters.update(_parameters(value))
        elif key in inputs:
            request.inputs[key] = _input_tensor(key, value, inputs[key])
        else:
            request.parameters[key] = _parameter_value(key, value)
    return request


def encode_generate_response(response: InferResponse) -> dict[str, Any]:
    """Raises ModelExecutionError for a BYTES output that is not UTF-8 (JSON has no form for it)."""
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        body["id"] = response.id
    if response.values is not None:
        body.update(response.values)
    for output in response.outputs:
        try:  # BYTES elements are decoded here: one pass checks they are UTF-8 and converts them
            values = array_to_json(output.data)
        except UnicodeDecodeError:
            raise ModelExecutionError(
                f"output '{output.name}' of model '{response.model_name}' holds bytes that are not UTF-8, "
                "which generate cannot return as JSON text; use the infer API with binary data"
            ) from None
        body[output.name] = values[0] if len(values) == 1 else values
    for key, value in response.parameters.items():
        body.setdefault(key, value)
    return body


# Triton's http_server.cc, word for word: a client may look for it.
TRITON_RESPONSE_COUNT_MESSAGE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)


def encode_response_count_error(error: ResponseCountError) -> dict[str, str]:
    """The body of the 200 answer to a decoupled model's response count other than one (module docstring)."""
    return {"error": f"{TRITON_RESPONSE_COUNT_MESSAGE}; model '{error.model_name}' sent {error.num_responses}"}


def _input_tensor(name: str, value: Any, metadata: dict) -> InferTensor:
    datatype = datatypes.from_wire_name(metadata["datatype"])
    values = value if isinstance(value, list) else [value]
    shape = _shape_for(len(values), list(metadata["shape"]), name)
    return InferTensor(name, datatype.wire_name, shape, json_to_array(values, datatype, shape, f"input '{name}'"))


def _shape_for(count: int, declared: list[int], name: str) -> tuple[int, ...]:
    """Spread `count` elements over `declared`: fixed dims divide it, the last -1 takes the rest."""
    remaining = count
    for dim in declared:
        if dim != -1:
            if dim == 0 or remaining % dim:
                raise InvalidArgumentError(f"cannot shape {count} values of input '{name}' as {declared}")
            remaining //= dim
    shape = list(declared)
    variable = [i for i, d in enumerate(shape) if d == -1]
    for index in variable:
        shape[index] = 1
    if variable:
        shape[variable[-1]] = remaining
        remaining = 1
    if remaining != 1:
        raise InvalidArgumentError(f"cannot shape {count} values of input '{name}' as {declared}")
    return tuple(shape)


def _parameters(value: Any) -> dict:
    if not isinstance(value, dict):
        raise InvalidArgumentError("generate request: 'parameters' must be a JSON object")
    return {key: _parameter_value(key, item) for key, item in value.items()}


def _parameter_value(key: str, value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise InvalidArgumentError(
            f"generate request: '{key}' is neither a model input nor a string/number/boolean parameter"
        )
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"generate request: '{key}' must be a string")
    return value
