"""A response that carries values is encoded as the same message as the equivalent response of tensors."""

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferResponse, InferTensor
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
