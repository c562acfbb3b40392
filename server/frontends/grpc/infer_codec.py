"""`ModelInferRequest` / `ModelInferResponse` <-> InferRequest / InferResponse.

Inputs come either all as `raw_input_contents` (bytes in input order; fixed-size types are
viewed with numpy without another copy) or as typed `contents`. Outputs always go back as
`raw_output_contents`, as Triton sends them.
"""

from __future__ import annotations

import math

import numpy as np
from tritonclient.grpc import service_pb2

from modelgate.core.errors import InvalidArgumentError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor, RequestedOutput
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.raw_bytes import array_from_raw, array_to_raw
from modelgate.server.frontends.grpc.parameters import fill_parameters, parameters_to_dict
from modelgate.server.shared_memory.tensor_io import REGION

# Which typed `contents` field carries each datatype (FP16 and BF16 have none: raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# The numpy dtype each typed `contents` field holds (narrower types are range-checked, then cast).
_CONTENTS_DTYPE = {
    "bool_contents": np.bool_,
    "int_contents": np.int64,
    "int64_contents": np.int64,
    "uint_contents": np.int64,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def decode_infer_request(message: service_pb2.ModelInferRequest) -> InferRequest:
    request = InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        id=message.id,
        parameters=parameters_to_dict(message.parameters),
    )
    raw_contents = message.raw_input_contents
    # Each protobuf field access builds a wrapper (upb): the inputs and their parameters are read once.
    tensors = list(message.inputs)
    if raw_contents:
        _check_no_typed_contents(message.model_name, tensors)
    tensor_parameters = [parameters_to_dict(tensor.parameters) for tensor in tensors]
    # Inputs in shared memory have no raw contents: the entries belong to the other inputs, in order.
    in_regions = [REGION in parameters for parameters in tensor_parameters]
    num_on_wire = len(in_regions) - sum(in_regions)
    if raw_contents and len(raw_contents) != num_on_wire:
        raise InvalidArgumentError(
            f"raw_input_contents has {len(raw_contents)} entries for {num_on_wire} inputs not in shared memory; "
            "send raw contents for every such input or for none"
        )
    raw_index = 0
    for tensor, parameters, in_region in zip(tensors, tensor_parameters, in_regions):
        # Read-only arrays over the message's bytes: no copy here. A python model, which may change its inputs in
        # place as in Triton, gets writable copies (backends/python/request_conversion.py); other backends never
        # write to their inputs.
        raw = None
        if raw_contents and not in_region:
            raw, raw_index = raw_contents[raw_index], raw_index + 1
        decoded = _decode_input(tensor, raw, in_region, parameters)
        if decoded.name in request.inputs:
            raise InvalidArgumentError(f"input '{decoded.name}' appears more than once in 'inputs'")
        request.inputs[decoded.name] = decoded
    if message.outputs:
        request.outputs = [RequestedOutput(o.name, parameters_to_dict(o.parameters)) for o in message.outputs]
    return request


def encode_infer_response(response: InferResponse) -> service_pb2.ModelInferResponse:
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    fill_parameters(message.parameters, response.parameters)
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        # An output written to shared memory keeps an empty entry: clients find raw contents by output position.
        raw = b"" if output.data is None else array_to_raw(output.data, output.datatype)
        message.raw_output_contents.append(raw)
    return message


def _check_no_typed_contents(model_name: str, tensors: list) -> None:
    """With raw_input_contents no input may carry `contents` too; in Triton's words, which clients match."""
    for tensor in tensors:
        if tensor.HasField("contents"):
            raise InvalidArgumentError(
                f"contents field must not be specified when using raw_input_contents for '{tensor.name}' "
                f"for model '{model_name}'; send each input's data in one of them"
            )


def _decode_input(tensor, raw: bytes | None, in_region: bool, parameters: dict) -> InferTensor:
    name = tensor.name
    datatype = datatypes.from_wire_name(tensor.datatype, f"input '{name}' datatype")
    shape = tuple(tensor.shape)  # a repeated int64: Python ints already
    if shape and min(shape) < 0:
        raise InvalidArgumentError(f"input '{name}': shape must hold non-negative sizes, got {list(shape)}")
    if in_region:
        if tensor.HasField("contents"):
            raise InvalidArgumentError(f"input '{name}' is in shared memory and must not carry 'contents'")
        data = None  # read from its region by the dataplane
    elif raw is not None:  # no input has `contents` then (_check_no_typed_contents)
        data = array_from_raw(raw, datatype, shape, f"input '{name}'")
    else:
        data = _from_contents(tensor.contents, datatype, shape, f"input '{name}'")
    return InferTensor(name, datatype.wire_name, shape, data, parameters)


def _from_contents(contents, datatype: datatypes.DataType, shape: tuple[int, ...], where: str) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype.wire_name)
    if field is None:
        raise InvalidArgumentError(
            f"{where}: {datatype.wire_name} has no typed contents; send it in raw_input_contents"
        )
    for other in _CONTENTS_FIELD.values():
        if other != field and len(getattr(contents, other)):
            raise InvalidArgumentError(f"{where}: {datatype.wire_name} data must be in '{field}', not '{other}'")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgumentError(
            f"{where}: '{field}' has {len(values)} elements but shape {list(shape)} needs {count}"
        )
    if datatype.is_bytes:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    # An explicit dtype: numpy would make float64 of uint64 values mixing small ones and ones >= 2**63.
    array = np.array(values, dtype=_CONTENTS_DTYPE[field])
    if datatype.numpy_dtype.kind in "iu" and array.size:
        info = np.iinfo(datatype.numpy_dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidArgumentError(f"{where}: '{field}' has values out of range for {datatype.wire_name}")
    return array.astype(datatype.numpy_dtype).reshape(shape)
