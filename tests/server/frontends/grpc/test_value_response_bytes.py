"""A request's first and last values responses built as bytes (ValueResponseEncoder.serialize_response): the very
bytes of the message `encode` builds, serialized by protobuf, whatever the id, the final flag and the outputs."""

import struct

import pytest
from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferResponse
from modelgate.server.frontends.grpc.value_responses import FINAL_PARAMETER, ValueResponseEncoder

DATATYPES = {"text": "BYTES", "count": "INT32", "total": "INT64", "score": "FP32", "half": "FP16", "flag": "BOOL"}
VALUES = {"text": " café", "count": -7, "total": 2**40, "score": 0.25, "half": 1.5, "flag": True}
IDS = ["", "r-1", "x" * 127, "y" * 128, "é" * 200]  # no id, and id lengths of one and two bytes


def _protobuf_bytes(response: InferResponse, is_final: bool) -> bytes:
    return ValueResponseEncoder(DATATYPES).encode(response, is_final).SerializeToString()


@pytest.mark.parametrize("request_id", IDS)
@pytest.mark.parametrize("is_final", [False, True])
def test_a_first_response_serializes_to_the_bytes_of_its_message(request_id, is_final):
    response = InferResponse("llm", "3", id=request_id, values=VALUES)
    serialized = ValueResponseEncoder(DATATYPES).serialize_response(response, is_final)
    assert serialized == _protobuf_bytes(response, is_final)
    parsed = service_pb2.ModelStreamInferResponse.FromString(serialized).infer_response
    assert parsed.id == request_id and parsed.parameters[FINAL_PARAMETER].bool_param is is_final


@pytest.mark.parametrize("request_id", IDS)
def test_a_request_s_responses_first_tokens_and_last_are_the_bytes_of_their_messages(request_id):
    """As a stream goes: the first response serialized, tokens through `serialize`, the last one final."""
    encoder = ValueResponseEncoder(DATATYPES)
    sequence = [VALUES, {**VALUES, "text": "b", "count": 8}, {**VALUES, "text": "c"}]
    first = InferResponse("llm", "3", id=request_id, values=sequence[0])
    assert encoder.serialize_response(first, False) == _protobuf_bytes(first, False)
    for values in sequence[1:]:
        assert encoder.serialize(values) == _protobuf_bytes(
            InferResponse("llm", "3", id=request_id, values=values), False
        )
    last = InferResponse("llm", "3", id=request_id, values={**VALUES, "text": "", "count": 9})
    assert encoder.serialize_response(last, True) == _protobuf_bytes(last, True)
    # The final head does not leak into later tokens (a stream never sends any, but the encoder must not care).
    assert encoder.serialize(VALUES) == _protobuf_bytes(InferResponse("llm", "3", id=request_id, values=VALUES), False)


def test_a_last_response_with_fewer_outputs_takes_a_template_of_its_own():
    encoder = ValueResponseEncoder(DATATYPES)
    encoder.serialize_response(InferResponse("llm", "3", id="r-1", values=VALUES), False)
    fewer = InferResponse("llm", "3", id="r-1", values={"text": "end", "count": 3})
    assert encoder.serialize_response(fewer, True) == _protobuf_bytes(fewer, True)
    assert encoder.serialize(VALUES) is None  # tokens of the first outputs: built as messages again


def test_an_undeclared_output_is_refused_and_the_template_stays():
    encoder = ValueResponseEncoder(DATATYPES)
    encoder.serialize_response(InferResponse("llm", "3", id="r-1", values=VALUES), False)
    with pytest.raises(ModelExecutionError, match="other"):
        encoder.serialize_response(InferResponse("llm", "3", id="r-1", values={"text": "a", "other": 1}), True)
    assert encoder.serialize(VALUES) == _protobuf_bytes(InferResponse("llm", "3", id="r-1", values=VALUES), False)


def test_a_refused_value_leaves_no_stale_field_behind():
    """A value its field cannot pack raises, every time: the field of the value before it is not reused."""
    encoder = ValueResponseEncoder({"count": "INT32"})
    encoder.serialize_response(InferResponse("llm", "3", id="r-1", values={"count": 1}), False)
    for _ in range(2):
        with pytest.raises(struct.error):
            encoder.serialize({"count": 2**40})
    assert encoder.serialize({"count": 2}) == _protobuf_bytes(
        InferResponse("llm", "3", id="r-1", values={"count": 2}), False
    )
