"""The triton_python_backend_utils API, used directly as a model would."""

import json
import logging

import ml_dtypes
import numpy as np
import pytest
import torch

import modelgate.backends.python.triton_python_backend_utils as pb_utils
from modelgate.backends.python.model_module import make_pb_utils_importable


def test_importable_under_tritons_name():
    make_pb_utils_importable()
    import triton_python_backend_utils

    assert triton_python_backend_utils.Tensor is pb_utils.Tensor
    assert triton_python_backend_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1


def test_tensor_accessors():
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    tensor = pb_utils.Tensor("T", data)
    assert tensor.name() == "T"
    assert tensor.as_numpy() is data
    assert tensor.shape() == [2, 3]
    assert tensor.triton_dtype() == 8  # TRITONSERVER_TYPE_INT32
    assert tensor.is_cpu()


def test_tensor_from_str_array_becomes_bytes_tensor():
    tensor = pb_utils.Tensor("S", np.array(["a", "bé"]))
    assert tensor.as_numpy().dtype == object
    assert tensor.triton_dtype() == 13


def test_dlpack_round_trip_shares_memory():
    data = np.arange(4, dtype=np.float32)
    tensor = pb_utils.Tensor("X", data)
    as_torch = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    as_torch[0] = 42.0
    assert data[0] == 42.0
    back = pb_utils.Tensor.from_dlpack("Y", torch.arange(3, dtype=torch.int64))
    np.testing.assert_array_equal(back.as_numpy(), [0, 1, 2])
    assert back.triton_dtype() == 9


def test_bf16_through_dlpack():
    values = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    tensor = pb_utils.Tensor("B", values)
    assert tensor.triton_dtype() == 14
    as_torch = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    assert as_torch.dtype == torch.bfloat16
    back = pb_utils.Tensor.from_dlpack("B2", as_torch * 2)
    np.testing.assert_array_equal(back.as_numpy().astype(np.float32), [3.0, -4.0, 6.5])


def test_bytes_tensor_has_no_dlpack():
    tensor = pb_utils.Tensor("S", np.array([b"x"], dtype=object))
    with pytest.raises(pb_utils.TritonModelException):
        tensor.to_dlpack()


@pytest.mark.parametrize(
    "type_string, dtype",
    [("TYPE_FP32", np.float32), ("TYPE_INT64", np.int64), ("TYPE_STRING", np.object_), ("TYPE_BOOL", bool)],
)
def test_triton_string_to_numpy(type_string, dtype):
    assert pb_utils.triton_string_to_numpy(type_string) == dtype


def test_type_code_conversions_are_inverse():
    for code in range(1, 15):
        dtype = pb_utils.triton_to_numpy_type(code)
        assert pb_utils.numpy_to_triton_type(dtype) == code
    assert pb_utils.triton_to_numpy_type(99) is None


def test_bytes_serialization_round_trip():
    elements = np.array([b"", "ünï".encode(), b"\x00\xff"], dtype=object)
    serialized = pb_utils.serialize_byte_tensor(elements)
    assert serialized.dtype == np.uint8
    assert serialized[:4].tobytes() == b"\x00\x00\x00\x00"
    assert list(pb_utils.deserialize_bytes_tensor(serialized.tobytes())) == list(elements)
    assert pb_utils.serialize_byte_tensor(np.array([], dtype=object)) is None


def test_triton_error_codes_and_response():
    error = pb_utils.TritonError("nope", pb_utils.TritonError.NOT_FOUND)
    assert error.message() == "nope" and error.code() == pb_utils.TritonError.NOT_FOUND
    assert pb_utils.TritonError("x").code() == pb_utils.TritonError.INTERNAL
    response = pb_utils.InferenceResponse(error=error)
    assert response.has_error() and response.error() is error and response.output_tensors() == []
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.InferenceResponse(output_tensors=("not", "a list"))


def test_lookup_helpers():
    out = pb_utils.Tensor("OUT", np.zeros(1))
    response = pb_utils.InferenceResponse([out])
    assert pb_utils.get_output_tensor_by_name(response, "OUT") is out
    assert pb_utils.get_output_tensor_by_name(response, "MISSING") is None
    request = pb_utils.InferenceRequest(inputs=[out], requested_output_names=[], parameters={"k": 1})
    assert pb_utils.get_input_tensor_by_name(request, "OUT") is out
    assert json.loads(request.parameters()) == {"k": 1}
    config = {"input": [{"name": "A", "data_type": "TYPE_FP32"}], "output": [{"name": "B"}]}
    assert pb_utils.get_input_config_by_name(config, "A")["data_type"] == "TYPE_FP32"
    assert pb_utils.get_output_config_by_name(config, "B") == {"name": "B"}
    assert pb_utils.get_output_config_by_name(config, "C") is None


def test_response_sender_only_for_decoupled_models():
    request = pb_utils.InferenceRequest(inputs=[], requested_output_names=[])
    with pytest.raises(pb_utils.TritonModelException, match="decoupled"):
        request.get_response_sender()


def test_logger_writes_to_server_log(caplog):
    with caplog.at_level(logging.INFO, logger="modelgate.python_model"):
        pb_utils.Logger.log_info("hello from a model")
        pb_utils.Logger.log_error("bad thing")
        pb_utils.Logger.log("warned", pb_utils.Logger.WARNING)
    levels = {(r.getMessage(), r.levelno) for r in caplog.records}
    assert ("hello from a model", logging.INFO) in levels
    assert ("bad thing", logging.ERROR) in levels
    assert ("warned", logging.WARNING) in levels


def test_auto_complete_model_config_rules():
    config = pb_utils.ModelConfig(json.dumps({"name": "m", "max_batch_size": 4, "input": [], "output": []}))
    config.add_input({"name": "X", "data_type": "TYPE_FP32", "dims": [3]})
    config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [3]})
    config.set_max_batch_size(8)
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": False})
    as_dict = config.as_dict()
    assert as_dict["max_batch_size"] == 8 and "dynamic_batching" in as_dict
    assert [t["name"] for t in as_dict["input"]] == ["X"]
    with pytest.raises(ValueError, match="max_batch_size"):
        config.set_max_batch_size(2)
    with pytest.raises(ValueError, match="datatype"):
        config.add_input({"name": "X", "data_type": "TYPE_INT32", "dims": [3]})
    with pytest.raises(ValueError, match="dims"):
        config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [4]})
    with pytest.raises(ValueError, match="missing 'dims'"):
        config.add_input({"name": "Z", "data_type": "TYPE_FP32"})
    with pytest.raises(ValueError, match="property other than"):
        config.add_input({"name": "Z", "data_type": "TYPE_FP32", "dims": [1], "shape": [1]})
