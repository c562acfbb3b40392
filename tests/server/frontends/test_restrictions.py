"""--http-restricted-api and --grpc-restricted-protocol through real clients: refused without the header (403 /
PERMISSION_DENIED naming it), served with it, and categories left unrestricted keep serving without it."""

from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.server_harness import copy_example_model, start_server

# Copied at each use: tritonclient adds its own headers to the dict it is given.
ADMIN = {"admin-key": "s3cret"}
INFER = {"infer-key": "abc"}


@pytest.fixture(scope="module")
def restricted_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("restricted")
    copy_example_model(repository, "add_sub")
    running = start_server(
        [repository],
        http_restricted_api=["model-repository,logging:admin-key=s3cret", "inference:infer-key=abc"],
        grpc_restricted_protocol=["health,model-repository,logging:admin-key=s3cret", "inference:infer-key=abc"],
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(restricted_server):
    client = httpclient.InferenceServerClient(restricted_server.http_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(restricted_server):
    client = grpcclient.InferenceServerClient(restricted_server.grpc_url)
    yield client
    client.close()


def _add_sub_inputs(module):
    a = np.arange(4, dtype=np.float32)
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a * 10)
    return inputs, a * 11


def _refused(call, status: str, header: str, category: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status
    message = caught.value.message()
    assert f"expecting header '{header}'" in message and f"'{category}'" in message
    return message


# -- HTTP ---------------------------------------------------------------------------------------------


def test_http_restricted_categories_answer_403_without_the_header(http):
    message = _refused(http.get_model_repository_index, "403", "admin-key", "model-repository")
    assert message.startswith("This API is restricted")
    _refused(http.get_log_settings, "403", "admin-key", "logging")
    _refused(lambda: http.unload_model("add_sub"), "403", "admin-key", "model-repository")
    inputs, _ = _add_sub_inputs(httpclient)
    _refused(lambda: http.infer("add_sub", inputs), "403", "infer-key", "inference")


def test_http_a_wrong_value_or_another_categorys_header_is_refused(http):
    _refused(lambda: http.get_log_settings(headers={"admin-key": "s3cre"}), "403", "admin-key", "logging")
    inputs, _ = _add_sub_inputs(httpclient)
    _refused(lambda: http.infer("add_sub", inputs, headers=dict(ADMIN)), "403", "infer-key", "inference")


def test_http_with_the_header_the_restricted_apis_serve(http):
    index = http.get_model_repository_index(headers={"Admin-Key": "s3cret"})  # HTTP header names: any case
    assert [row["name"] for row in index] == ["add_sub"]
    assert "log_verbose_level" in http.get_log_settings(headers=dict(ADMIN))
    inputs, expected = _add_sub_inputs(httpclient)
    result = http.infer("add_sub", inputs, headers=dict(INFER))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)


def test_http_unrestricted_categories_serve_without_a_header(http):
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("add_sub")
    assert http.get_server_metadata()["name"] == "modelgate"
    assert http.get_model_config("add_sub")["name"] == "add_sub"
    assert http.get_inference_statistics("add_sub")["model_stats"][0]["name"] == "add_sub"


def test_http_every_route_of_a_category_is_restricted_and_the_body_is_triton_json(restricted_server):
    base = f"http://{restricted_server.http_url}"
    for path in ("/v2/models/add_sub/versions/1/infer", "/v2/models/add_sub/generate_stream"):
        answer = requests.post(base + path, json={"inputs": []}, timeout=30)
        assert answer.status_code == 403
        assert answer.json() == {"error": "This API is restricted, expecting header 'infer-key' (category 'inference')"}


def test_openai_routes_are_inference_and_refused_in_openais_error_shape(restricted_server):
    url = f"http://{restricted_server.http_url}/v1/models"
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 403
    assert "expecting header 'infer-key'" in answer.json()["error"]["message"]
    assert requests.get(url, headers=dict(INFER), timeout=30).json()["object"] == "list"


# -- gRPC ---------------------------------------------------------------------------------------------


def test_grpc_restricted_categories_answer_permission_denied(grpc_client):
    denied = "StatusCode.PERMISSION_DENIED"
    message = _refused(grpc_client.is_server_live, denied, "admin-key", "health")
    assert message.startswith("This protocol is restricted")
    _refused(grpc_client.get_model_repository_index, denied, "admin-key", "model-repository")
    _refused(grpc_client.get_log_settings, denied, "admin-key", "logging")
    inputs, _ = _add_sub_inputs(grpcclient)
    _refused(lambda: grpc_client.infer("add_sub", inputs), denied, "infer-key", "inference")
    _refused(lambda: grpc_client.infer("add_sub", inputs, headers=dict(ADMIN)), denied, "infer-key", "inference")


def test_grpc_with_the_metadata_the_restricted_methods_serve(grpc_client):
    assert grpc_client.is_server_live(headers=dict(ADMIN))
    index = grpc_client.get_model_repository_index(headers=dict(ADMIN))
    assert [model.name for model in index.models] == ["add_sub"]
    inputs, expected = _add_sub_inputs(grpcclient)
    result = grpc_client.infer("add_sub", inputs, headers=dict(INFER))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)


def test_grpc_unrestricted_categories_serve_without_metadata(grpc_client):
    assert grpc_client.get_server_metadata().name == "modelgate"
    assert grpc_client.get_model_metadata("add_sub").name == "add_sub"
    assert grpc_client.get_model_config("add_sub").config.name == "add_sub"
    assert grpc_client.get_inference_statistics("add_sub").model_stats[0].name == "add_sub"


def _stream_outcome(grpc_client, headers) -> tuple:
    results: queue.Queue = queue.Queue()
    grpc_client.start_stream(lambda result, error: results.put((result, error)), headers=headers)
    try:
        inputs, expected = _add_sub_inputs(grpcclient)
        try:
            grpc_client.async_stream_infer("add_sub", inputs)
        except InferenceServerException:
            pass  # a refused stream may have ended before this request: the callback has its status
        return (*results.get(timeout=30), expected)
    finally:
        grpc_client.stop_stream()


def test_grpc_a_stream_is_refused_at_its_start_and_served_with_the_metadata(grpc_client):
    result, error, _ = _stream_outcome(grpc_client, None)
    assert result is None and error.status() == "StatusCode.PERMISSION_DENIED"
    assert "expecting header 'infer-key'" in error.message()
    result, error, expected = _stream_outcome(grpc_client, dict(INFER))
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)


def test_grpc_health_v1_counts_as_health(restricted_server):
    with grpc.insecure_channel(restricted_server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        answer = health.Check(health_pb2.HealthCheckRequest(), metadata=tuple(ADMIN.items()), timeout=30)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
