"""Bad requests over gRPC get the matching status code, and the server keeps serving after each."""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.server.frontends.grpc.grpc_helpers import A, B, add_sub_inputs, int32_input


@pytest.fixture
def assert_serving(grpc_client):
    """Call after a bad request: live, and a good infer answered correctly."""

    def check() -> None:
        assert grpc_client.is_server_live()
        result = grpc_client.infer("add_sub", add_sub_inputs(A, B))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)

    return check


def expect_status(code: str, fragment: str, call, *args, **kwargs) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    assert caught.value.status() == f"StatusCode.{code}"
    assert fragment in caught.value.message()


def fp32_input(name: str, shape: list[int], datatype: str = "FP32") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, shape, datatype)
    dtype = {"FP32": np.float32, "INT32": np.int32, "FP64": np.float64}[datatype]
    tensor.set_data_from_numpy(np.ones(shape, dtype=dtype))
    return tensor


# -- INVALID_ARGUMENT ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        (
            [fp32_input("INPUT0", [4]), fp32_input("INPUT1", [4]), fp32_input("INPUT2", [4])],
            "unexpected inference input 'INPUT2'",
        ),
        ([fp32_input("INPUT0", [4])], "expects input(s) 'INPUT1'"),
        ([fp32_input("INPUT0", [4], "INT32"), fp32_input("INPUT1", [4])], "has datatype INT32, expected FP32"),
        ([fp32_input("INPUT0", [4]), fp32_input("INPUT1", [4], "FP64")], "has datatype FP64, expected FP32"),
        ([fp32_input("INPUT0", [3]), fp32_input("INPUT1", [4])], "has shape [3], expected [4]"),
        ([fp32_input("INPUT0", [1, 4]), fp32_input("INPUT1", [1, 4])], "has shape [1, 4], expected [4]"),
    ],
    ids=["unknown-input", "missing-input", "int32-for-fp32", "fp64-for-fp32", "short", "extra-dimension"],
)
def test_inputs_not_fitting_the_model(grpc_client, assert_serving, inputs, fragment):
    expect_status("INVALID_ARGUMENT", fragment, grpc_client.infer, "add_sub", inputs)
    assert_serving()


def test_unknown_requested_output(grpc_client, assert_serving):
    outputs = [grpcclient.InferRequestedOutput("OUTPUT9")]
    expect_status(
        "INVALID_ARGUMENT",
        "unexpected inference output 'OUTPUT9'",
        grpc_client.infer,
        "add_sub",
        add_sub_inputs(A, B),
        outputs=outputs,
    )
    assert_serving()


def test_batch_larger_than_max_batch_size(grpc_client, assert_serving):
    expect_status(
        "INVALID_ARGUMENT",
        "between 1 and max_batch_size 8",
        grpc_client.infer,
        "batched_scale",
        [fp32_input("X", [9, 2])],
    )
    result = grpc_client.infer("batched_scale", [fp32_input("X", [8, 2])])
    np.testing.assert_array_equal(result.as_numpy("Y"), np.full((8, 2), 2.0, np.float32))
    assert_serving()


def test_invalid_version_string(grpc_client, assert_serving):
    expect_status(
        "INVALID_ARGUMENT",
        "failed to get model version from specified version string 'one'",
        grpc_client.infer,
        "add_sub",
        add_sub_inputs(A, B),
        model_version="one",
    )
    assert_serving()


@pytest.fixture(scope="module")
def stub(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def raw_add_sub_request(raw_contents: list[bytes], datatype: str = "FP32") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype=datatype, shape=[4])
    request.raw_input_contents.extend(raw_contents)
    return request


def expect_rpc_error(code: grpc.StatusCode, fragment: str, call, request) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    assert caught.value.code() == code
    assert fragment in caught.value.details()


@pytest.mark.parametrize(
    "request_message, fragment",
    [
        (
            raw_add_sub_request([A.tobytes()[:15], B.tobytes()]),
            "input 'INPUT0': has 15 bytes of data but shape [4] of FP32 needs 16",
        ),
        (raw_add_sub_request([A.tobytes(), B.tobytes() + b"\0"]), "has 17 bytes of data"),
        (raw_add_sub_request([A.tobytes()]), "raw_input_contents has 1 entries for 2 inputs"),
        (raw_add_sub_request([A.tobytes(), B.tobytes(), B.tobytes()]), "raw_input_contents has 3 entries for 2 inputs"),
        (raw_add_sub_request([A.tobytes(), B.tobytes()], datatype="FP8"), "unknown datatype 'FP8'"),
        (raw_add_sub_request([b"", b""]), "has 0 bytes of data"),
    ],
    ids=["short-raw", "long-raw", "too-few-raw", "too-many-raw", "unknown-datatype", "empty-raw"],
)
def test_malformed_raw_contents(stub, assert_serving, request_message, fragment):
    expect_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, fragment, stub.ModelInfer, request_message)
    assert_serving()


def test_negative_dimension(stub, assert_serving):
    request = service_pb2.ModelInferRequest(model_name="identity_int32")
    request.inputs.add(name="INPUT", datatype="INT32", shape=[-1, 2])
    request.raw_input_contents.append(b"\0" * 8)
    expect_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "shape must hold non-negative sizes", stub.ModelInfer, request)
    assert_serving()


def test_the_same_input_twice(stub, assert_serving):
    request = raw_add_sub_request([A.tobytes(), B.tobytes()])
    request.inputs[1].name = "INPUT0"
    expect_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "'INPUT0' appears more than once", stub.ModelInfer, request)
    assert_serving()


def test_malformed_bytes_raw_contents(stub, assert_serving):
    request = service_pb2.ModelInferRequest(model_name="identity_bytes")
    request.inputs.add(name="INPUT", datatype="BYTES", shape=[1, 2])
    request.raw_input_contents.append(b"\x03\x00\x00\x00abc\x09\x00\x00\x00ab")  # second element cut short
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving()


# -- NOT_FOUND -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_model_metadata", "get_model_config", "get_inference_statistics"])
def test_unknown_model_and_version_are_not_found(grpc_client, assert_serving, method):
    expect_status("NOT_FOUND", "unknown model: 'no_such_model'", getattr(grpc_client, method), "no_such_model")
    expect_status(
        "NOT_FOUND",
        "Request for unknown model: 'add_sub' version 3 is not found",
        getattr(grpc_client, method),
        "add_sub",
        "3",
    )
    assert_serving()


def test_infer_on_unknown_model_and_version(grpc_client, assert_serving):
    expect_status(
        "NOT_FOUND", "unknown model: 'no_such_model'", grpc_client.infer, "no_such_model", add_sub_inputs(A, B)
    )
    expect_status(
        "NOT_FOUND", "version 2 is not found", grpc_client.infer, "add_sub", add_sub_inputs(A, B), model_version="2"
    )
    assert_serving()


# -- UNAVAILABLE ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_model_metadata", "get_model_config", "get_inference_statistics"])
def test_model_that_failed_to_load_is_unavailable(grpc_client, assert_serving, method):
    expect_status("UNAVAILABLE", "broken on purpose", getattr(grpc_client, method), "broken")
    assert_serving()


def test_infer_on_a_model_that_failed_to_load(grpc_client, assert_serving):
    expect_status("UNAVAILABLE", "broken on purpose", grpc_client.infer, "broken", [int32_input("X", [1])])
    assert_serving()


# -- UNIMPLEMENTED -------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[1, 2], []])
def test_unary_infer_on_a_decoupled_model_sending_other_than_one_response(grpc_client, assert_serving, values):
    expect_status(
        "UNIMPLEMENTED",
        f"model 'repeat_int32' is decoupled and sent {len(values)} responses",
        grpc_client.infer,
        "repeat_int32",
        [int32_input("IN", values)],
    )
    assert_serving()


def test_unary_infer_on_a_decoupled_model_sending_one_response(grpc_client):
    result = grpc_client.infer("repeat_int32", [int32_input("IN", [42])])
    assert (int(result.as_numpy("OUT")[0]), int(result.as_numpy("IDX")[0])) == (42, 0)


@pytest.mark.parametrize("method", ["load_model", "unload_model"])
def test_load_and_unload_outside_explicit_mode(grpc_client, assert_serving, method):
    expect_status(
        "UNIMPLEMENTED", "not allowed when --model-control-mode is 'none'", getattr(grpc_client, method), "add_sub"
    )
    assert grpc_client.is_model_ready("add_sub")
    assert_serving()


def test_shared_memory_rpcs_need_the_servers_permission(grpc_client, assert_serving):
    expect_status("PERMISSION_DENIED", "--allow-shared-memory", grpc_client.get_system_shared_memory_status)
    assert_serving()


def test_raw_and_typed_contents_for_one_input(stub, assert_serving):
    request = raw_add_sub_request([A.tobytes(), B.tobytes()])
    request.inputs[0].contents.fp32_contents.extend(B.tolist())
    expect_rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'add_sub'",
        stub.ModelInfer,
        request,
    )
    assert_serving()
