"""KServe v2 HTTP infer bodies <-> InferRequest / InferResponse, with the binary extension.

A request body is a JSON header, optionally followed (when `Inference-Header-Content-Length`
is set) by the raw bytes of the inputs that carry `binary_data_size`, in input order.
Fixed-size binary inputs are viewed in place with numpy (no copy).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor, RequestedOutput
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.bytes_codec import deserialize_bytes_tensor, serialize_bytes_tensor
from modelgate.server.frontends.http.json_tensors import array_to_json, bytes_are_utf8, json_to_array
from modelgate.server.shared_memory.tensor_io import names_region

# One encoder for every response: json.dumps with separators builds a new one per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))

HEADER_LENGTH = "Inference-Header-Content-Length"


def parse_header_length(value: str | None, body_length: int) -> int:
    """The JSON header's length: the whole body when the header is absent."""
    if value is None:
        return body_length
    if not value.isdigit():  # int() would also take " 12 ", "1_000" and "+5"
        raise InvalidArgumentError(f"{HEADER_LENGTH} must be a non-negative integer, got '{value}'")
    length = int(value)
    if length < 0 or length > body_length:
        raise InvalidArgumentError(
            f"{HEADER_LENGTH} is {length} but the body has {body_length} bytes; it must be between 0 and the body size"
        )
    return length


def decode_infer_request(body: bytes, header_length: int, model_name: str, model_version: str) -> InferRequest:
    header = _json_object(body[:header_length], "inference request")
    request = InferRequest(model_name=model_name, model_version=model_version)
    request.id = _optional(header, "id", str, "")
    request.parameters = _optional(header, "parameters", dict, {})
    inputs = _required_list(header, "inputs")
    binary = _BinarySection(body, header_length)
    for index, raw_input in enumerate(inputs):
        tensor = _decode_input(raw_input, index, binary)
        if tensor.name in request.inputs:
            raise InvalidArgumentError(f"input '{tensor.name}' appears more than once in 'inputs'")
        request.inputs[tensor.name] = tensor
    binary.check_consumed()
    request.outputs = [_decode_output(o, i) for i, o in enumerate(_optional(header, "outputs", list, []))]
    return request


def encode_infer_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is JSON only)."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    wants_binary = {o.name: bool(o.parameters.get("binary_data", binary_default)) for o in request.outputs}
    outputs_json = []
    chunks: list[bytes] = []
    for output in response.outputs:
        if output.data is None:  # written to the shared memory region the request named
            outputs_json.append({"name": output.name, "datatype": output.datatype, "shape": list(output.shape)})
            continue
        as_binary = wants_binary.get(output.name, binary_default)
        if output.datatype == "BYTES" and not as_binary and not bytes_are_utf8(output.data):
            as_binary = True  # JSON strings cannot carry arbitrary bytes
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if as_binary:
            raw = _raw_bytes(output)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array_to_json(output.data)
        outputs_json.append(entry)
    header: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
    header["outputs"] = outputs_json
    header_bytes = _COMPACT_JSON.encode(header).encode()
    if not chunks:
        return header_bytes, None
    return b"".join([header_bytes, *chunks]), len(header_bytes)


def _raw_bytes(output: InferTensor) -> bytes:
    if output.datatype == "BYTES":
        return serialize_bytes_tensor(output.data)
    return np.ascontiguousarray(output.data).tobytes()


class _BinarySection:
    """The bytes after the JSON header, handed out in input order."""

    def __init__(self, body: bytes, start: int):
        self.body = body
        self.offset = start

    def take(self, size: int, where: str) -> tuple[int, int]:
        if self.offset + size > len(self.body):
            raise InvalidArgumentError(
                f"{where}: binary_data_size {size} runs past the end of the request body "
                f"({len(self.body) - self.offset} binary bytes left)"
            )
        start = self.offset
        self.offset += size
        return start, size

    def check_consumed(self) -> None:
        left = len(self.body) - self.offset
        if left:
            raise InvalidArgumentError(
                f"request body has {left} bytes after the inputs' binary data; "
                f"check {HEADER_LENGTH} and each input's binary_data_size"
            )


def _decode_input(raw: Any, index: int, binary: _BinarySection) -> InferTensor:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgumentError(f"{where} must be a JSON object")
    name = _required(raw, "name", str, where)
    where = f"input '{name}'"
    datatype = datatypes.from_wire_name(_required(raw, "datatype", str, where), f"{where} datatype")
    shape = _shape(_required(raw, "shape", list, where), where)
    parameters = _optional(raw, "parameters", dict, {}, where)
    if names_region(parameters):
        if "data" in raw or "binary_data_size" in parameters:
            raise InvalidArgumentError(f"{where} is in shared memory and must not carry 'data' or 'binary_data_size'")
        data = None  # read from its region by the dataplane
    elif "binary_data_size" in parameters:
        data = _binary_input(parameters["binary_data_size"], datatype, shape, binary, where)
    elif "data" in raw:
        data = json_to_array(raw["data"], datatype, shape, where)
    else:
        raise InvalidArgumentError(f"{where} has neither 'data' nor a 'binary_data_size' parameter")
    return InferTensor(name, datatype.wire_name, shape, data, parameters)


def _binary_input(size: Any, datatype, shape: tuple[int, ...], binary: _BinarySection, where: str) -> np.ndarray:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgumentError(f"{where}: binary_data_size must be a non-negative integer")
    count = math.prod(shape)
    start, size = binary.take(size, where)
    if datatype.is_bytes:
        view = memoryview(binary.body)[start : start + size]
        return deserialize_bytes_tensor(view, count, where).reshape(shape)
    expected = count * datatype.itemsize
    if size != expected:
        raise InvalidArgumentError(
            f"{where}: binary_data_size is {size} bytes but shape {list(shape)} of {datatype.wire_name} needs {expected}"
        )
    return np.frombuffer(binary.body, dtype=datatype.numpy_dtype, count=count, offset=start).reshape(shape)


def _decode_output(raw: Any, index: int) -> RequestedOutput:
    where = f"outputs[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgumentError(f"{where} must be a JSON object")
    name = _required(raw, "name", str, where)
    parameters = _optional(raw, "parameters", dict, {}, f"output '{name}'")
    if parameters.get("classification"):
        raise InvalidArgumentError(f"output '{name}': the 'classification' parameter is not supported")
    return RequestedOutput(name, parameters)


def _shape(raw: list, where: str) -> tuple[int, ...]:
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidArgumentError(f"{where}: 'shape' must be a list of non-negative integers, got {raw}")
    return tuple(raw)


def _json_object(raw: bytes, what: str) -> dict:
    value = loads_bounded(raw, what) if raw else None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{what} must be a JSON object")
    return value


def _required(obj: dict, key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise InvalidArgumentError(f"{where} is missing '{key}'")
    return _typed(obj[key], key, kind, where)


def _required_list(obj: dict, key: str) -> list:
    return _required(obj, key, list, "inference request")


def _optional(obj: dict, key: str, kind: type, default: Any, where: str = "inference request") -> Any:
    if key not in obj or obj[key] is None:
        return default
    return _typed(obj[key], key, kind, where)


def _typed(value: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {str: "a string", list: "an array", dict: "an object", int: "an integer"}
        raise InvalidArgumentError(f"{where}: '{key}' must be {names.get(kind, kind.__name__)}")
    return value
