"""The constant part of a values response (value_responses.py), built once per model, version and outputs and
shared by the requests that have them.

A request's first values response needs its template: the ModelStreamInferResponse with the model, version, id,
the outputs' names, datatypes and shapes and a false final flag, serialized too (with a true one as well, for
the request's last response). Built per request from protobuf
messages it cost ~8 µs warm and 20-30 µs in the server under load (issue 18: 0.2-0.3 µs of server CPU per token
at 96 tokens a request). Only the id differs between requests, so the template is kept without it, and each
request puts its id in: into its copy of the message (`message_with_id`), and between the fields around it in
the serialized form (`head_with_id`): protobuf writes fields in number order, and the id (3) comes after the
model name (1) and version (2), before the parameters (4) and outputs (5).

Invariant: a template is never changed once built (requests copy its message); an output the model does not
declare builds none (ModelExecutionError).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelExecutionError
from modelgate.core.tensors import datatypes
from modelgate.server.frontends.grpc.protobuf_wire import length_delimited, length_delimited_tag, varint

FINAL_PARAMETER = "triton_final_response"
# Templates kept at most: one per model version and set of outputs in practice; a server whose models answer
# ever new sets of outputs starts over past it rather than growing.
MAX_TEMPLATES = 256
_BYTES_LENGTH = struct.Struct("<I")  # a BYTES element in raw contents: its length, then the bytes
_STRUCT_CODES = {"b": {1: "?"}, "i": {1: "b", 2: "h", 4: "i", 8: "q"}, "u": {1: "B", 2: "H", 4: "I", 8: "Q"}}
_STRUCT_CODES["f"] = {2: "e", 4: "f", 8: "d"}
_ID_TAG = length_delimited_tag(service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name["id"].number)
RAW_CONTENTS_TAG = length_delimited_tag(
    service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
)


class ValueTemplate(NamedTuple):
    message: service_pb2.ModelStreamInferResponse  # with no id; never changed: requests copy it
    names: tuple[str, ...]  # the outputs, in the order of the values
    packers: tuple[Callable, ...]  # by output: value -> its raw contents
    raw_fields: tuple[Callable, ...]  # by output: value -> its raw contents as a serialized field
    before_id: bytes  # the serialized infer_response's fields before the id (model name, version)
    after_id: bytes  # and after it, but the raw contents (parameters, outputs)
    after_id_final: bytes  # the same with the final flag true: a request's last response

    def message_with_id(self, request_id: str) -> service_pb2.ModelStreamInferResponse:
        message = service_pb2.ModelStreamInferResponse()
        message.CopyFrom(self.message)
        if request_id:
            message.infer_response.id = request_id
        return message

    def head_with_id(self, request_id: str, is_final: bool = False) -> bytes:
        """The serialized infer_response of `message_with_id(request_id)`, its final flag set to `is_final`."""
        after_id = self.after_id_final if is_final else self.after_id
        if not request_id:  # proto3 writes no empty string
            return self.before_id + after_id
        return self.before_id + length_delimited(_ID_TAG, request_id.encode()) + after_id


_templates: dict[tuple, ValueTemplate] = {}


def value_template(
    model_name: str, model_version: str, names: tuple[str, ...], output_datatypes: dict[str, str]
) -> ValueTemplate:
    """The template of responses of `model_name` and `model_version` carrying the outputs `names`, whose datatypes
    `output_datatypes` (the model's metadata, output name -> wire datatype) gives."""
    key = (model_name, model_version, names, tuple(output_datatypes.get(name) for name in names))
    template = _templates.get(key)
    if template is None:
        template = _build(model_name, model_version, names, output_datatypes)
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        _templates[key] = template
    return template


def _build(model_name: str, model_version: str, names: tuple[str, ...], output_datatypes: dict[str, str]):
    template = service_pb2.ModelStreamInferResponse()
    infer_response = template.infer_response
    infer_response.model_name = model_name
    infer_response.model_version = model_version
    packers, raw_fields = [], []
    for name in names:
        datatype = output_datatypes.get(name)
        if datatype is None:
            raise ModelExecutionError(f"model '{model_name}' answered output '{name}', which it does not declare")
        infer_response.outputs.add(name=name, datatype=datatype, shape=[1])
        packers.append(_packer(datatype))
        raw_fields.append(_raw_field(datatype, packers[-1]))
    named = service_pb2.ModelInferResponse(model_name=model_name, model_version=model_version).SerializeToString()
    infer_response.parameters[FINAL_PARAMETER].bool_param = True
    final_head = infer_response.SerializeToString()
    infer_response.parameters[FINAL_PARAMETER].bool_param = False
    head = infer_response.SerializeToString()
    assert head.startswith(named) and final_head.startswith(named), "protobuf wrote other fields before the name"
    after_id, after_id_final = head[len(named) :], final_head[len(named) :]
    return ValueTemplate(template, names, tuple(packers), tuple(raw_fields), named, after_id, after_id_final)


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
    key = RAW_CONTENTS_TAG + varint(datatypes.from_wire_name(wire_name).itemsize)  # one element: a fixed length
    return lambda value: key + pack(value)


def _raw_bytes_field(value) -> bytes:
    data = value.encode("utf-8") if type(value) is str else bytes(value)
    size = len(data)
    if size < len(_SHORT_BYTES_KEYS):
        return _SHORT_BYTES_KEYS[size] + data
    return RAW_CONTENTS_TAG + varint(size + _BYTES_LENGTH.size) + _BYTES_LENGTH.pack(size) + data


# What precedes a BYTES element of `size` bytes in its raw contents field, for the sizes a token's text has: the
# key, the field's length and the element's length, built once rather than in three steps per token.
_SHORT_BYTES_KEYS = [
    RAW_CONTENTS_TAG + varint(size + _BYTES_LENGTH.size) + _BYTES_LENGTH.pack(size) for size in range(256)
]
