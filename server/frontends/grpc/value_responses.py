"""ModelStreamInfer messages of a request whose model answers with values (`InferResponse.values`).

An LLM stream sends one response per token, each with the same outputs of one element. The part that
never changes (model, version, id, the outputs' names, datatypes and shapes) is built once per request as
a template; each response copies it and appends its raw contents: a fifth of the work of encoding tensors.
Where the transport takes serialized responses (response_writer.py), a token's message is not built at all:
`serialize` appends its raw contents to the template's bytes (protobuf writes fields in number order, and the
raw contents are the last field), the same bytes as `encode`'s message serialized.
"""

from __future__ import annotations

import struct

import numpy as np
from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferResponse
from modelgate.core.tensors import datatypes
from modelgate.server.frontends.grpc.protobuf_wire import length_delimited_tag, varint

FINAL_PARAMETER = "triton_final_response"
_BYTES_LENGTH = struct.Struct("<I")  # a BYTES element in raw contents: its length, then the bytes
_STRUCT_CODES = {"b": {1: "?"}, "i": {1: "b", 2: "h", 4: "i", 8: "q"}, "u": {1: "B", 2: "H", 4: "I", 8: "Q"}}
_STRUCT_CODES["f"] = {2: "e", 4: "f", 8: "d"}
_NOTHING = object()  # no value seen yet: equal to none
_INFER_RESPONSE_TAG = length_delimited_tag(
    service_pb2.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"].number
)
_RAW_CONTENTS_TAG = length_delimited_tag(
    service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
)


class ValueResponseEncoder:
    def __init__(self, output_datatypes: dict[str, str]):
        """`output_datatypes`: the model's outputs, name -> wire datatype (its metadata)."""
        self._output_datatypes = output_datatypes
        self._template: service_pb2.ModelStreamInferResponse | None = None
        self._names: tuple[str, ...] = ()
        self._packers: list = []
        self._head: bytes | None = None  # the template's infer_response serialized: every field but raw contents
        self._raw_fields: list = []  # value -> its raw contents as a serialized field, by output
        # By output, the value `serialize` last saw and its field: a token's outputs mostly repeat (the finish
        # reason, the input token count, the logprobs), and their fields need not be built again.
        self._last_values: list = []
        self._last_fields: list[bytes] = []

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

    def serialize(self, values: dict) -> bytes | None:
        """The serialized non-final message of a response carrying `values` with the model, version and id of the
        response that `encode` last built its template from: `encode`'s message, serialized. None where that
        template has other outputs (or none was built): `encode` such a response first."""
        if tuple(values) != self._names or self._head is None:
            return None
        last_values, last_fields = self._last_values, self._last_fields
        index = 0
        for value in values.values():
            last = last_values[index]
            # The same object (a constant, a small int) needs no comparison. Else the type too: 1 == 1.0 == True,
            # and a field packs each its own way (or refuses one).
            if value is not last and (value != last or value.__class__ is not last.__class__):
                last_values[index] = value
                last_fields[index] = self._raw_fields[index](value)
            index += 1
        fields = b"".join(last_fields)
        head = self._head
        return b"".join((_INFER_RESPONSE_TAG, varint(len(head) + len(fields)), head, fields))

    def _build_template(self, response: InferResponse) -> None:
        """Every attribute changes together, once the whole template is built: an output the model does not
        declare leaves the previous template as it was."""
        template = service_pb2.ModelStreamInferResponse()
        infer_response = template.infer_response
        infer_response.model_name = response.model_name
        infer_response.model_version = response.model_version
        infer_response.id = response.id
        packers, raw_fields = [], []
        for name in response.values:
            datatype = self._output_datatypes.get(name)
            if datatype is None:
                raise ModelExecutionError(
                    f"model '{response.model_name}' answered output '{name}', which it does not declare"
                )
            infer_response.outputs.add(name=name, datatype=datatype, shape=[1])
            packers.append(_packer(datatype))
            raw_fields.append(_raw_field(datatype, packers[-1]))
        infer_response.parameters[FINAL_PARAMETER].bool_param = False
        self._template, self._names = template, tuple(response.values)
        self._packers, self._raw_fields = packers, raw_fields
        self._last_values, self._last_fields = [_NOTHING] * len(packers), [b""] * len(packers)
        self._head = infer_response.SerializeToString()


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


def _raw_field(wire_name: str, pack):
    """value -> its raw contents (`pack`ed) as a field of the infer response, key and length included."""
    if datatypes.from_wire_name(wire_name).is_bytes:
        return _raw_bytes_field
    key = _RAW_CONTENTS_TAG + varint(datatypes.from_wire_name(wire_name).itemsize)  # one element: a fixed length
    return lambda value: key + pack(value)


def _raw_bytes_field(value) -> bytes:
    data = value.encode("utf-8") if type(value) is str else bytes(value)
    size = len(data)
    if size < len(_SHORT_BYTES_KEYS):
        return _SHORT_BYTES_KEYS[size] + data
    return _RAW_CONTENTS_TAG + varint(size + _BYTES_LENGTH.size) + _BYTES_LENGTH.pack(size) + data


# What precedes a BYTES element of `size` bytes in its raw contents field, for the sizes a token's text has: the
# key, the field's length and the element's length, built once rather than in three steps per token.
_SHORT_BYTES_KEYS = [
    _RAW_CONTENTS_TAG + varint(size + _BYTES_LENGTH.size) + _BYTES_LENGTH.pack(size) for size in range(256)
]
