"""What Triton's client examples check, asked of modelgate through tritonclient HTTP and gRPC: the server's
name, Triton's words for unknown models and versions, and the stand-in models' answers."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelgate.core.version import MODELGATE_VERSION
from modelgate.server.dataplane import EXTENSIONS, SHARED_MEMORY_EXTENSIONS

IN0 = np.arange(16, dtype=np.int32).reshape(1, 16)
IN1 = np.full((1, 16), -3, dtype=np.int32)


@pytest.fixture(scope="module", params=["http", "grpc"])
def client(request, triton_named_server):
    if request.param == "http":
        made = httpclient.InferenceServerClient(triton_named_server.http_url, network_timeout=60)
    else:
        made = grpcclient.InferenceServerClient(triton_named_server.grpc_url)
    made.protocol = request.param
    yield made
    made.close()


def _module(client):
    return httpclient if client.protocol == "http" else grpcclient


def _int32_inputs(client, *arrays):
    inputs = []
    for index, array in enumerate(arrays):
        tensor = _module(client).InferInput(f"INPUT{index}", list(array.shape), "INT32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_server_metadata_carries_the_configured_name_and_our_version(client):
    metadata = client.get_server_metadata()
    if client.protocol == "grpc":
        metadata = {"name": metadata.name, "version": metadata.version, "extensions": list(metadata.extensions)}
    # The server allows client shared memory (the shm examples need it), so it lists those extensions too.
    extensions = EXTENSIONS + SHARED_MEMORY_EXTENSIONS
    assert metadata == {"name": "triton", "version": MODELGATE_VERSION, "extensions": extensions}


def test_simple_sums_and_subtracts(client):
    result = client.infer("simple", _int32_inputs(client, IN0, IN1))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), IN0 + IN1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), IN0 - IN1)


@pytest.mark.parametrize("call", ["infer", "metadata"])
def test_an_unknown_model_is_answered_in_tritons_words(client, call):
    with pytest.raises(InferenceServerException) as raised:
        if call == "infer":
            client.infer("wrong_model_name", _int32_inputs(client, IN0, IN1))
        else:
            client.get_model_metadata("wrong_model_name")
    assert raised.value.message().startswith("Request for unknown model: 'wrong_model_name' is not found")
    assert raised.value.status() == ("404" if client.protocol == "http" else "StatusCode.NOT_FOUND")


def test_an_unknown_version_is_answered_in_tritons_words(client):
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("simple", model_version="7")
    assert raised.value.message().startswith("Request for unknown model: 'simple' version 7 is not found")
    assert raised.value.status() == ("404" if client.protocol == "http" else "StatusCode.NOT_FOUND")


def test_strings_of_integers_are_summed_as_strings(client):
    as_bytes = np.vectorize(lambda v: str(v).encode(), otypes=[np.object_])
    inputs = []
    for index, array in enumerate((IN0, IN1)):
        tensor = _module(client).InferInput(f"INPUT{index}", [1, 16], "BYTES")
        tensor.set_data_from_numpy(as_bytes(array))
        inputs.append(tensor)
    result = client.infer("simple_string", inputs)
    assert [int(v) for v in result.as_numpy("OUTPUT0")[0]] == (IN0 + IN1)[0].tolist()
    assert [int(v) for v in result.as_numpy("OUTPUT1")[0]] == (IN0 - IN1)[0].tolist()


def test_identity_keeps_nul_bytes(client):
    values = np.array([[b"nul\x00inside", b"\x00\x01\x02"] * 8], dtype=np.object_)
    tensor = _module(client).InferInput("INPUT0", [1, 16], "BYTES")
    tensor.set_data_from_numpy(values)
    result = client.infer("simple_identity", [tensor])
    assert result.as_numpy("OUTPUT0").tolist() == values.tolist()


def test_a_python_model_without_config_serves_with_its_backend_inferred(client):
    result = client.infer("negate_no_config", _int32_inputs(client, IN0))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), -IN0)
    config = client.get_model_config("negate_no_config")
    backend = config["backend"] if client.protocol == "http" else config.config.backend
    assert backend == "python"


def _int8_request(version: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="simple_int8", model_version=version)
    for name, values in (("INPUT0", range(-8, 8)), ("INPUT1", [2] * 16)):
        tensor = request.inputs.add(name=name, datatype="INT8", shape=[1, 16])
        tensor.contents.int_contents.extend(values)
    return request


def test_int8_typed_contents_and_a_bad_version_string(triton_named_server):
    import grpc

    with grpc.insecure_channel(triton_named_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(_int8_request(""))
        total = np.frombuffer(response.raw_output_contents[0], dtype=np.int8)
        assert total.tolist() == [v + 2 for v in range(-8, 8)]
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(_int8_request("wrong_specification"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "failed to get model version from specified version string 'wrong_specification'" in (raised.value.details())


def test_repeat_int32_streams_one_response_per_element_in_order(triton_named_server):
    import queue

    received = queue.Queue()
    values = np.array([7, 8, 9], dtype=np.int32)
    inputs = [
        grpcclient.InferInput("IN", [3], "INT32"),
        grpcclient.InferInput("DELAY", [3], "UINT32"),
        grpcclient.InferInput("WAIT", [1], "UINT32"),
    ]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(np.array([5, 0, 5], dtype=np.uint32))
    inputs[2].set_data_from_numpy(np.array([5], dtype=np.uint32))
    with grpcclient.InferenceServerClient(triton_named_server.grpc_url) as client:
        client.start_stream(callback=lambda result, error: received.put(error or result))
        client.async_stream_infer("repeat_int32", inputs)
        answers = [received.get(timeout=30) for _ in values]
        client.stop_stream()
    assert [a.as_numpy("OUT").tolist() for a in answers] == [[7], [8], [9]]
    assert [a.as_numpy("IDX").tolist() for a in answers] == [[0], [1], [2]]
