"""gRPC messages protobuf cannot decode end their RPC with INVALID_ARGUMENT naming the message type (grpcio
alone answers UNKNOWN), unary and streamed; --grpc-max-input-size bounds a request message. The server keeps
serving after each. Raw bytes go out through a grpc channel with no serializer: tritonclient only sends valid
messages."""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.server.frontends.grpc.grpc_helpers import A, B, add_sub_inputs
from tests.server_harness import copy_example_model, start_server

SERVICE = "/inference.GRPCInferenceService/"
# A string field whose length runs past the end; a tag of field number 0; a truncated string.
UNDECODABLE = [b"\x0a\xff\x01abc", b"\x00\x00", b"\x0a\x05ab"]


@pytest.fixture
def assert_serving(grpc_client):
    def check() -> None:
        result = grpc_client.infer("add_sub", add_sub_inputs(A, B))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)

    return check


@pytest.fixture
def channel(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as opened:
        yield opened


@pytest.mark.parametrize("raw", UNDECODABLE)
@pytest.mark.parametrize(
    "method, message_type",
    [("ModelInfer", "ModelInferRequest"), ("ModelReady", "ModelReadyRequest"), ("ServerLive", "ServerLiveRequest")],
)
def test_an_undecodable_unary_message_is_invalid_argument(channel, assert_serving, raw, method, message_type):
    call = channel.unary_unary(SERVICE + method)  # no serializers: bytes as they are
    with pytest.raises(grpc.RpcError) as caught:
        call(raw, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"not a valid inference.{message_type} protobuf message" in caught.value.details()
    assert method in caught.value.details()
    assert_serving()


def test_an_undecodable_message_ends_the_stream_with_invalid_argument(channel, assert_serving):
    """A good request, then bytes that are not a ModelInferRequest: the good one is answered first or
    cancelled, and the stream's status is INVALID_ARGUMENT."""
    good = service_pb2.ModelInferRequest(model_name="no_such_model", id="good").SerializeToString()
    stream = channel.stream_stream(SERVICE + "ModelStreamInfer")
    responses = stream(iter([good, UNDECODABLE[0]]), timeout=30)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in responses:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelStreamInfer: the request is not a valid inference.ModelInferRequest" in caught.value.details()
    assert_serving()


def test_tritonclient_sees_invalid_argument_too(grpc_server, channel, assert_serving):
    """What a tritonclient user reads: the status and the message."""
    call = channel.unary_unary(SERVICE + "ModelMetadata")
    with pytest.raises(grpc.RpcError) as caught:
        call(UNDECODABLE[0], timeout=30)
    error = InferenceServerException(msg=caught.value.details(), status=str(caught.value.code()))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert_serving()


def test_a_message_over_grpc_max_input_size_is_resource_exhausted(tmp_path):
    repository = tmp_path / "models"
    copy_example_model(repository, "add_sub")
    running = start_server([repository], grpc_max_input_size=4096)
    try:
        with grpc.insecure_channel(running.grpc_url) as opened:
            call = opened.unary_unary(SERVICE + "ModelInfer")
            with pytest.raises(grpc.RpcError) as caught:
                call(service_pb2.ModelInferRequest(model_name="add_sub", id="x" * 8192).SerializeToString())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "4096" in caught.value.details()
        with grpcclient.InferenceServerClient(running.grpc_url) as client:
            result = client.infer("add_sub", add_sub_inputs(A, B))  # small messages still pass
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    finally:
        running.stop()
