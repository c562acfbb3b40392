"""Infer features: output selection, binary_data_output, ids, parameters, versions, compression."""

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient

from modelgate.server.frontends.http.response_compression import MIN_COMPRESSED_BYTES, refuses_identity
from tests.server.frontends.http.raw_http import post_binary, post_json, send, split_binary_response

A = np.array([1.5, 2, 3, 4], dtype=np.float32)
B = np.array([10, 20, 30, 40], dtype=np.float32)
ADD_SUB_JSON = {
    "inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": A.tolist()},
        {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": B.tolist()},
    ]
}


def _add_sub_inputs(binary: bool = True) -> list:
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(A, binary_data=binary)
    inputs[1].set_data_from_numpy(B, binary_data=binary)
    return inputs


def _echo_inputs() -> list:
    data = np.array([3, 1, 4], dtype=np.int32)
    return [httpclient.InferInput("INPUT", [3], "INT32").set_data_from_numpy(data)]


# -- output selection -------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_requesting_one_output_returns_only_it(client, binary):
    outputs = [httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary)]
    result = client.infer("add_sub", _add_sub_inputs(binary), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    assert result.as_numpy("OUTPUT0") is None


def test_outputs_come_back_in_the_requested_order_with_their_own_encoding(client):
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
        httpclient.InferRequestedOutput("OUTPUT0"),
    ]
    result = client.infer("add_sub", _add_sub_inputs(), outputs=outputs)
    first, second = result.get_response()["outputs"]
    assert first["name"] == "OUTPUT1" and first["data"] == (A - B).tolist()
    assert second["name"] == "OUTPUT0" and second["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_no_outputs_requested_returns_every_output(example_server):
    response = post_json(example_server.http_url, "/v2/models/add_sub/infer", ADD_SUB_JSON)
    assert response.status == 200
    assert response.headers.get("Inference-Header-Content-Length") is None
    body = response.json()
    assert body["model_name"] == "add_sub" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["OUTPUT0"] == {"name": "OUTPUT0", "datatype": "FP32", "shape": [4], "data": (A + B).tolist()}
    assert outputs["OUTPUT1"]["data"] == (A - B).tolist()


# -- binary_data_output and binary_data ---------------------------------------------------------


def test_binary_data_output_parameter_makes_every_output_binary(example_server):
    body = {**ADD_SUB_JSON, "parameters": {"binary_data_output": True}}
    response = post_json(example_server.http_url, "/v2/models/add_sub/infer", body)
    assert response.status == 200
    header, binary = split_binary_response(response)
    assert [o["parameters"] for o in header["outputs"]] == [{"binary_data_size": 16}] * 2
    assert all("data" not in o for o in header["outputs"])
    by_name = {o["name"]: i for i, o in enumerate(header["outputs"])}
    sums = np.frombuffer(binary[by_name["OUTPUT0"] * 16 :][:16], dtype=np.float32)
    np.testing.assert_array_equal(sums, A + B)


def test_an_outputs_binary_data_false_overrides_binary_data_output(example_server):
    body = {
        **ADD_SUB_JSON,
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}, {"name": "OUTPUT1"}],
    }
    header, binary = split_binary_response(post_json(example_server.http_url, "/v2/models/add_sub/infer", body))
    assert header["outputs"][0]["data"] == (A + B).tolist()
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(np.frombuffer(binary, dtype=np.float32), A - B)


def test_tritonclient_without_outputs_gets_binary_outputs(client):
    result = client.infer("add_sub", _add_sub_inputs(binary=False))
    for output in result.get_response()["outputs"]:
        assert output["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_binary_inputs_mixed_with_json_inputs(example_server):
    header = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": A.tolist()},
            {"name": "INPUT1", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}},
        ],
        "outputs": [{"name": "OUTPUT1", "parameters": {"binary_data": False}}],
    }
    response = post_binary(example_server.http_url, "/v2/models/add_sub/infer", header, B.tobytes())
    assert response.status == 200
    assert response.json()["outputs"][0]["data"] == (A - B).tolist()


# -- request id and parameters ----------------------------------------------------------------


def test_request_id_is_echoed_and_reaches_the_model(probe_client):
    result = probe_client.infer("echo_request", _echo_inputs(), request_id="req-\u00e9-42")
    response = result.get_response()
    assert response["id"] == "req-\u00e9-42"
    assert result.as_numpy("REQUEST_ID")[0].decode() == "req-\u00e9-42"


def test_no_id_in_the_response_without_one_in_the_request(probe_client):
    result = probe_client.infer("echo_request", _echo_inputs())
    assert "id" not in result.get_response()
    assert result.as_numpy("REQUEST_ID")[0] == b""


def test_request_parameters_reach_the_model_as_json(probe_client):
    parameters = {"temperature": 0.5, "mode": "fast", "count": 3, "flag": True}
    result = probe_client.infer("echo_request", _echo_inputs(), parameters=parameters)
    seen = json.loads(result.as_numpy("PARAMETERS")[0])
    assert {k: seen[k] for k in parameters} == parameters
    assert "binary_data_output" not in seen  # a server parameter, not the model's


def test_model_response_parameters_reach_the_client(probe_client):
    result = probe_client.infer("echo_request", _echo_inputs())
    assert result.get_response()["parameters"] == {"model_says": "hello"}


# -- versions ---------------------------------------------------------------------------------


def test_versioned_infer_route_picks_the_version(probe_client, probe_server):
    data = np.array([0], dtype=np.int32)
    inputs = [httpclient.InferInput("INPUT", [1], "INT32").set_data_from_numpy(data)]
    for version in ("1", "2"):
        result = probe_client.infer("two_versions", inputs, model_version=version)
        assert result.get_response()["model_version"] == version
        assert result.as_numpy("VERSION")[0] == int(version)
    body = {"inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [1], "data": [0]}]}
    latest = post_json(probe_server.http_url, "/v2/models/two_versions/infer", body).json()
    assert latest["model_version"] == "2" and latest["outputs"][0]["data"] == [2]


# -- compression ------------------------------------------------------------------------------


@pytest.mark.parametrize("request_algorithm", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_algorithm", [None, "gzip", "deflate"])
@pytest.mark.parametrize("binary", [False, True])
def test_compressed_requests_and_responses(client, request_algorithm, response_algorithm, binary):
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer(
        "add_sub",
        _add_sub_inputs(binary),
        outputs=outputs,
        request_compression_algorithm=request_algorithm,
        response_compression_algorithm=response_algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_raw_compressed_binary_request_and_response(example_server, encoding, compress):
    """A compressed request; a response compressed as asked (`identity;q=0`: even add_sub's small one)."""
    header = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}},
            {"name": "INPUT1", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    header_bytes = json.dumps(header).encode()
    body = compress(header_bytes + A.tobytes() + B.tobytes())
    headers = {
        "Inference-Header-Content-Length": str(len(header_bytes)),  # of the uncompressed body
        "Content-Encoding": encoding,
        "Accept-Encoding": f"{encoding}, identity;q=0",
    }
    response = send(example_server.http_url, "POST", "/v2/models/add_sub/infer", body, headers)
    assert response.status == 200
    assert response.headers["Content-Encoding"] == encoding
    plain = _decompress(encoding, response.body)
    length = int(response.headers["Inference-Header-Content-Length"])
    assert json.loads(plain[:length])["outputs"][0]["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(np.frombuffer(plain[length:], dtype=np.float32), A + B)


def _decompress(encoding: str, body: bytes) -> bytes:
    return gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_responses_are_compressed_from_a_kibibyte_on(example_server, encoding):
    """Small responses go out plain whatever Accept-Encoding allows (compressing them costs more than it saves);
    a response of MIN_COMPRESSED_BYTES or more is compressed as asked."""
    small = send(
        example_server.http_url,
        "POST",
        "/v2/models/add_sub/infer",
        json.dumps(ADD_SUB_JSON),
        {"Accept-Encoding": encoding},
    )
    assert small.status == 200 and "Content-Encoding" not in small.headers
    assert small.json()["outputs"][0]["data"] == (A + B).tolist()
    x = np.arange(MIN_COMPRESSED_BYTES, dtype=np.float32)
    large_request = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [len(x)], "data": x.tolist()}]}
    large = send(
        example_server.http_url,
        "POST",
        "/v2/models/add_batch_dim/infer",
        json.dumps(large_request),
        {"Accept-Encoding": encoding},
    )
    assert large.status == 200 and large.headers["Content-Encoding"] == encoding
    answer = json.loads(_decompress(encoding, large.body))
    assert answer["outputs"][0]["data"] == x.tolist()


def test_identity_refusals():
    assert refuses_identity("gzip, identity;q=0")
    assert refuses_identity("gzip;q=1.0, *;q=0")
    assert refuses_identity("deflate, IDENTITY; q=0.0")
    assert not refuses_identity("gzip, deflate")
    assert not refuses_identity("gzip, identity;q=0.5, *;q=0")  # identity named and allowed
    assert not refuses_identity("gzip;q=x")  # a malformed weight counts as none


def test_no_compression_without_accept_encoding(example_server):
    response = send(example_server.http_url, "POST", "/v2/models/add_sub/infer", json.dumps(ADD_SUB_JSON))
    assert response.status == 200
    assert "Content-Encoding" not in response.headers
    assert response.json()["outputs"][0]["data"] == (A + B).tolist()


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_requests_get_their_own_answers(probe_server):
    """Many requests in flight on several connections: each response carries its request's id and data."""
    client = httpclient.InferenceServerClient(probe_server.http_url, concurrency=8, network_timeout=60)
    try:
        pending = []
        for index in range(32):
            data = np.full(5, index, dtype=np.int32)
            inputs = [
                httpclient.InferInput("INPUT", [5], "INT32").set_data_from_numpy(data, binary_data=index % 2 == 0)
            ]
            pending.append((index, client.async_infer("echo_request", inputs, request_id=f"r{index}")))
        for index, request in pending:
            result = request.get_result()
            assert result.get_response()["id"] == f"r{index}"
            np.testing.assert_array_equal(result.as_numpy("OUTPUT"), np.full(5, index, dtype=np.int32))
    finally:
        client.close()
