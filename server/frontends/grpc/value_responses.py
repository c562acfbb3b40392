"""ModelStreamInfer messages of a request whose model answers with values (`InferResponse.values`).

An LLM stream sends one response per token, each with the same outputs of one element. The part that
never changes (model, version, id, the outputs' names, datatypes and shapes) is built once per request as
a template; each response copies it and appends its raw contents: a fifth of the work of encoding tensors.
"""

from __future__ import annotations

import struct

import numpy as np
from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferResponse
from modelgate.core.tensors import datatypes

FINAL_PARAMETER = "triton_final_response"
_BYTES_LENGTH = struct.Struct("<I")  # a BYTES element in raw contents: its length, then the bytes
_STRUCT_CODES = {"b": {1: "?"}, "i": {1: "b", 2: "h", 4: "i", 8: "q"}, "u": {1: "B", 2: "H", 4: "I", 8: "Q"}}
_STRUCT_CODES["f"] = {2: "e", 4: "f", 8: "d"}


class ValueResponseEncoder:
    def __init__(self, output_datatypes: dict[str, str]):
        """`output_datatypes`: the model's outputs, name -> wire datatype (its metadata)."""
        self._output_datatypes = output_datatypes
        self._template: service_pb2.ModelStreamInferResponse | None = None
        self._names: tuple[str, ...] = ()
        self._packers: list = []

    def encode(self, response: InferResponse, is_final: bool) -> service_pb2.ModelStreamInferResponse:
        """The message of `response` (which carries values); ModelExecutionError for an output the model
        does not declare."""
        values = response.values
        if self._template is None or tuple(values) != self._names:
            self._build_template(response)
        message = service_pb2.ModelStreamInferResponse()
        message.CopyFrom(self._template)
        infer_response = message.infer_response
        infer_response.raw_output_contents.extend([pack(value) for pack, value in zip(self._packers, values.values())])
        if is_final:
            infer_response.parameters[FINAL_PARAMETER].bool_param = True
        return message

    def _build_template(self, response: InferResponse) -> None:
        template = service_pb2.ModelStreamInferResponse()
        infer_response = template.infer_response
        infer_response.model_name = response.model_name
        infer_response.model_version = response.model_version
        infer_response.id = response.id
        self._packers = []
        for name in response.values:
            datatype = self._output_datatypes.get(name)
            if datatype is None:
                raise ModelExecutionError(
                    f"model '{response.model_name}' answered output '{name}', which it does not declare"
                )
            infer_response.outputs.add(name=name, datatype=datatype, shape=[1])
            self._packers.append(_packer(datatype))
        infer_response.parameters[FINAL_PARAMETER].bool_param = False
        self._template, self._names = template, tuple(response.values)


def _packer(wire_name: str):
    """value -> its raw contents as one element of `wire_name`."""
    datatype = datatypes.from_wire_name(wire_name)
    if datatype.is_bytes:
        return _pack_bytes
    code = _STRUCT_CODES.get(datatype.numpy_dtype.kind, {}).get(datatype.itemsize)
    if code is None:  # BF16: no struct code
        return lambda value: np.array([value], dtype=datatype.numpy_dtype).tobytes()
    return struct.Struct("<" + code).pack


def _pack_bytes(value) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return _BYTES_LENGTH.pack(len(data)) + data
