"""A response that carries values is encoded as the same message as the equivalent response of tensors."""

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferResponse, InferTensor
from modelgate.server.frontends.grpc import value_templates
from modelgate.server.frontends.grpc.infer_codec import encode_infer_response
from modelgate.server.frontends.grpc.value_responses import FINAL_PARAMETER, ValueResponseEncoder

DATATYPES = {"text": "BYTES", "count": "INT32", "total": "INT64", "score": "FP32", "half": "FP16", "flag": "BOOL"}
VALUES = {"text": " café", "count": -7, "total": 2**40, "score": 0.25, "half": 1.5, "flag": True}


def _tensor_response(values: dict) -> InferResponse:
    outputs = []
    for name, value in values.items():
        datatype = DATATYPES[name]
        data = np.array([value.encode()], dtype=object) if datatype == "BYTES" else np.array([value])
        if datatype != "BYTES":
            data = data.astype(
                {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32, "FP16": np.float16}.get(datatype, np.bool_)
            )
        outputs.append(InferTensor(name, datatype, (1,), data))
    return InferResponse("llm", "3", id="r-1", outputs=outputs)


def _expected(values: dict, is_final: bool) -> service_pb2.ModelStreamInferResponse:
    infer_response = encode_infer_response(_tensor_response(values))
    infer_response.parameters[FINAL_PARAMETER].bool_param = is_final
    return service_pb2.ModelStreamInferResponse(infer_response=infer_response)


@pytest.mark.parametrize("is_final", [False, True])
def test_values_encode_as_the_equivalent_tensors_do(is_final):
    encoder = ValueResponseEncoder(DATATYPES)
    message = encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), is_final)
    assert message == _expected(VALUES, is_final)


def test_each_response_carries_its_own_values_and_a_new_set_of_outputs_rebuilds_the_template():
    encoder = ValueResponseEncoder(DATATYPES)
    first = encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), False)
    second_values = {**VALUES, "text": "!", "count": 8}
    second = encoder.encode(InferResponse("llm", "3", id="r-1", values=second_values), False)
    assert first == _expected(VALUES, False) and second == _expected(second_values, False)
    fewer = {"count": 9, "text": "x"}
    assert encoder.encode(InferResponse("llm", "3", id="r-1", values=fewer), True) == _expected(fewer, True)


def test_an_output_the_model_does_not_declare_is_an_error():
    encoder = ValueResponseEncoder({"text": "BYTES"})
    with pytest.raises(ModelExecutionError, match="'other'"):
        encoder.encode(InferResponse("llm", "3", values={"text": "a", "other": 1}), False)


@pytest.mark.parametrize(
    "text",
    [" café", "", "x" * 120, "y" * 300, "é" * 40_000],  # lengths of one, two and three varint bytes
)
def test_serialized_values_are_the_encoded_message_serialized(text):
    encoder = ValueResponseEncoder(DATATYPES)
    encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), False)  # builds the template
    values = {**VALUES, "text": text, "count": 2**31 - 1}
    expected = encoder.encode(InferResponse("llm", "3", id="r-1", values=values), False)
    assert encoder.serialize(values) == expected.SerializeToString()
    assert service_pb2.ModelStreamInferResponse.FromString(encoder.serialize(values)) == _expected(values, False)


def test_bytes_values_serialize_as_their_strings_do():
    encoder = ValueResponseEncoder({"text": "BYTES"})
    encoder.encode(InferResponse("llm", "3", id="r-1", values={"text": "a"}), False)
    assert (
        encoder.serialize({"text": b"\xffraw"})
        == encoder.encode(InferResponse("llm", "3", id="r-1", values={"text": b"\xffraw"}), False).SerializeToString()
    )


def test_no_serialized_values_before_a_template_nor_for_other_outputs():
    encoder = ValueResponseEncoder(DATATYPES)
    assert encoder.serialize({}) is None and encoder.serialize(VALUES) is None
    encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), False)
    assert encoder.serialize({"text": "a"}) is None
    assert encoder.serialize(dict(reversed(VALUES.items()))) is None  # other order: other outputs


def test_an_undeclared_output_leaves_the_template_as_it_was():
    encoder = ValueResponseEncoder(DATATYPES)
    encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), False)
    with pytest.raises(ModelExecutionError):
        encoder.encode(InferResponse("llm", "3", id="r-1", values={"text": "a", "other": 1}), False)
    assert encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), False) == _expected(VALUES, False)
    assert encoder.serialize(VALUES) == _expected(VALUES, False).SerializeToString()


def test_serialized_values_follow_every_change_when_some_outputs_repeat():
    """Fields of repeated values are reused (value_responses.py): each message must still be its own values'."""
    encoder = ValueResponseEncoder(DATATYPES)
    encoder.encode(InferResponse("llm", "3", id="r-1", values=VALUES), False)
    sequence = [VALUES, {**VALUES, "text": "b"}, {**VALUES, "text": "b"}, {**VALUES, "count": 8}, VALUES]
    sequence += [{**VALUES, "text": b" caf\xc3\xa9"}, {**VALUES, "flag": False, "score": 2}, {**VALUES, "score": 2.5}]
    for values in sequence:
        serialized = encoder.serialize(values)
        assert service_pb2.ModelStreamInferResponse.FromString(serialized) == _expected(_as_text(values), False)


def test_a_value_equal_to_the_last_but_of_another_type_is_packed_again():
    encoder = ValueResponseEncoder({"count": "INT32"})
    encoder.encode(InferResponse("llm", "3", id="r-1", values={"count": 1}), False)
    assert encoder.serialize({"count": 1}) is not None
    with pytest.raises(struct.error):  # a float is no INT32, equal to 1 or not
        encoder.serialize({"count": 1.0})


def _as_text(values: dict) -> dict:
    return {name: value.decode() if isinstance(value, bytes) else value for name, value in values.items()}


@pytest.mark.parametrize("request_id", ["", "r-1", "x" * 127, "y" * 128, "é" * 200])  # id lengths of 1 and 2 bytes
def test_requests_of_one_model_share_a_template_and_each_keeps_its_own_id(request_id):
    """The template is shared (value_templates.py): each request's messages, built and serialized, still carry
    its id, the same bytes as its tensors encode to."""
    for other_id in ("first", request_id):  # the first builds the template, the second finds it
        encoder = ValueResponseEncoder(DATATYPES)
        message = encoder.encode(InferResponse("llm", "3", id=other_id, values=VALUES), False)
        expected = _expected(VALUES, False)
        expected.infer_response.id = other_id
        assert message == expected
        assert encoder.serialize(VALUES) == message.SerializeToString() == expected.SerializeToString()
    assert value_templates._templates[("llm", "3", tuple(VALUES), tuple(DATATYPES[name] for name in VALUES))]


def test_a_template_is_never_changed_by_the_requests_that_use_it():
    first = ValueResponseEncoder(DATATYPES)
    final = first.encode(InferResponse("llm", "3", id="a", values=VALUES), True)
    second = ValueResponseEncoder(DATATYPES).encode(InferResponse("llm", "3", id="", values=VALUES), False)
    assert final.infer_response.parameters[FINAL_PARAMETER].bool_param
    assert not second.infer_response.parameters[FINAL_PARAMETER].bool_param and second.infer_response.id == ""


def test_other_datatypes_for_the_same_outputs_get_their_own_template():
    """A model reloaded with other output datatypes under the same name and version: not the old template."""
    ValueResponseEncoder({"count": "INT32"}).encode(InferResponse("reloaded", "1", values={"count": 1}), False)
    message = ValueResponseEncoder({"count": "INT64"}).encode(
        InferResponse("reloaded", "1", values={"count": 1}), False
    )
    assert message.infer_response.outputs[0].datatype == "INT64"
    assert message.infer_response.raw_output_contents[0] == struct.pack("<q", 1)


def test_the_templates_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(value_templates, "_templates", {})
    for index in range(value_templates.MAX_TEMPLATES + 5):
        ValueResponseEncoder({"count": "INT32"}).encode(
            InferResponse(f"model-{index}", "1", values={"count": 1}), False
        )
    assert len(value_templates._templates) <= value_templates.MAX_TEMPLATES
