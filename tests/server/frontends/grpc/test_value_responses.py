"""A response that carries values is encoded as the same message as the equivalent response of tensors."""

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
