"""ModelStreamInfer messages of a request whose model answers with values (`InferResponse.values`).

An LLM stream sends one response per token, each with the same outputs of one element. The part that
never changes (model, version, id, the outputs' names, datatypes and shapes) is a template, shared by the
requests of a model version (value_templates.py); each response copies it and appends its raw contents: a
fifth of the work of encoding tensors.
Where the transport takes serialized responses (response_writer.py), a token's message is not built at all:
`serialize` appends its raw contents to the template's bytes (protobuf writes fields in number order, and the
raw contents are the last field), the same bytes as `encode`'s message serialized. A request's first and last
responses go the same way (`serialize_response`): the first builds the template, the last takes the template's
bytes with the final flag true. Through protobuf (copy the template's message, fill it, serialize) those two
cost ~6 µs warm per request, and ~3 times that in the server under load.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from modelgate.core.inference_types import InferResponse
from modelgate.server.frontends.grpc.protobuf_wire import length_delimited_tag, varint
from modelgate.server.frontends.grpc.value_templates import FINAL_PARAMETER, ValueTemplate, value_template

__all__ = ["FINAL_PARAMETER", "ValueResponseEncoder"]

_NOTHING = object()  # no value seen yet: equal to none
_INFER_RESPONSE_TAG = length_delimited_tag(
    service_pb2.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"].number
)


class ValueResponseEncoder:
    def __init__(self, output_datatypes: dict[str, str]):
        """`output_datatypes`: the model's outputs, name -> wire datatype (its metadata)."""
        self._output_datatypes = output_datatypes
        self._template: ValueTemplate | None = None
        self._id = ""
        self._names: tuple[str, ...] = ()
        self._head: bytes | None = None  # the template's infer_response serialized: every field but raw contents
        self._final_head = b""  # the same, its final flag true
        self._raw_fields: tuple = ()  # value -> its raw contents as a serialized field, by output
        # By output, the value `serialize` last saw and its field: a token's outputs mostly repeat (the finish
        # reason, the input token count, the logprobs), and their fields need not be built again.
        self._last_values: list = []
        self._last_fields: list[bytes] = []

    def encode(self, response: InferResponse, is_final: bool) -> service_pb2.ModelStreamInferResponse:
        """The message of `response` (which carries values); ModelExecutionError for an output the model
        does not declare."""
        values = response.values
        if self._template is None or tuple(values) != self._names:
            self._use_template(response)
        message = self._template.message_with_id(self._id)
        infer_response = message.infer_response
        packers = self._template.packers
        infer_response.raw_output_contents.extend([pack(value) for pack, value in zip(packers, values.values())])
        if is_final:
            infer_response.parameters[FINAL_PARAMETER].bool_param = True
        return message

    def serialize_response(self, response: InferResponse, is_final: bool) -> bytes:
        """`encode(response, is_final)` serialized, without building the message; ModelExecutionError for an
        output the model does not declare."""
        values = response.values
        if self._template is None or tuple(values) != self._names:
            self._use_template(response)
        return self.serialize(values, is_final)

    def serialize(self, values: dict, is_final: bool = False) -> bytes | None:
        """The serialized message of a response carrying `values` with the model, version and id of the response
        that `encode` (or `serialize_response`) last built its template from: `encode`'s message, serialized.
        None where that template has other outputs (or none was built): `encode` such a response first."""
        if tuple(values) != self._names or self._head is None:
            return None
        last_values, last_fields = self._last_values, self._last_fields
        index = 0
        for value in values.values():
            last = last_values[index]
            # The same object (a constant, a small int) needs no comparison. Else the type too: 1 == 1.0 == True,
            # and a field packs each its own way (or refuses one).
            if value is not last and (value != last or value.__class__ is not last.__class__):
                # The field first: a value it refuses (raising) leaves the pair as it was.
                last_fields[index] = self._raw_fields[index](value)
                last_values[index] = value
            index += 1
        fields = b"".join(last_fields)
        head = self._final_head if is_final else self._head
        return b"".join((_INFER_RESPONSE_TAG, varint(len(head) + len(fields)), head, fields))

    def _use_template(self, response: InferResponse) -> None:
        """Every attribute changes together, once the template is found: an output the model does not declare
        leaves the previous template as it was."""
        names = tuple(response.values)
        template = value_template(response.model_name, response.model_version, names, self._output_datatypes)
        self._template, self._id, self._names = template, response.id, names
        self._raw_fields = template.raw_fields
        self._last_values, self._last_fields = [_NOTHING] * len(names), [b""] * len(names)
        self._head = template.head_with_id(response.id)
        self._final_head = template.head_with_id(response.id, is_final=True)
