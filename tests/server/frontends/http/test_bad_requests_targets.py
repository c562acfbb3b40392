"""Infer requests that do not fit their target get 400 (404 for missing models and versions, 503 for a
model that failed to load) with a message naming the problem, and the server keeps serving: each test ends
with a good infer."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server.frontends.http.bad_request_helpers import FP32_4, fp32_input, good_add_sub_json
from tests.server.frontends.http.raw_http import post_json, send


def _client_error(client, model: str, inputs: list, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs, **kwargs)
    return caught.value


# -- unknown targets, through tritonclient -----------------------------------------------------


def test_unknown_model_is_404(client, example_server, assert_serving):
    error = _client_error(client, "no_such_model", [fp32_input("INPUT0", FP32_4)])
    assert error.status() == "404"
    assert "Request for unknown model: 'no_such_model' is not found" in error.message()
    raw = post_json(example_server.http_url, "/v2/models/no_such_model/infer", good_add_sub_json())
    assert raw.status == 404 and "unknown model" in raw.error
    assert_serving()


def test_unknown_version_is_404(client, example_server, assert_serving):
    inputs = [fp32_input("INPUT0", FP32_4), fp32_input("INPUT1", FP32_4)]
    error = _client_error(client, "add_sub", inputs, model_version="7")
    assert error.status() == "404"
    assert "Request for unknown model: 'add_sub' version 7 is not found; ready versions: [1]" in error.message()
    raw = post_json(example_server.http_url, "/v2/models/add_sub/versions/x1/infer", good_add_sub_json())
    assert raw.status == 400 and "failed to get model version from specified version string 'x1'" in raw.error
    assert_serving()


# -- inputs and outputs that do not fit the model, through tritonclient ---------------------------


def test_unknown_input(client, assert_serving):
    inputs = [fp32_input("INPUT0", FP32_4), fp32_input("INPUT1", FP32_4), fp32_input("BOGUS", FP32_4)]
    error = _client_error(client, "add_sub", inputs)
    assert error.status() == "400"
    assert "unexpected inference input 'BOGUS' for model 'add_sub'; its inputs are: INPUT0, INPUT1" in error.message()
    assert_serving()


def test_missing_input(client, assert_serving):
    error = _client_error(client, "add_sub", [fp32_input("INPUT0", FP32_4)])
    assert error.status() == "400"
    assert "model 'add_sub' expects input(s) 'INPUT1' that the request does not have" in error.message()
    assert_serving()


def test_unknown_requested_output(client, assert_serving):
    inputs = [fp32_input("INPUT0", FP32_4), fp32_input("INPUT1", FP32_4)]
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("NOPE")]
    error = _client_error(client, "add_sub", inputs, outputs=outputs)
    assert error.status() == "400"
    assert (
        "unexpected inference output 'NOPE' for model 'add_sub'; its outputs are: OUTPUT0, OUTPUT1" in error.message()
    )
    assert_serving()


@pytest.mark.parametrize("binary", [False, True])
def test_wrong_datatype(client, assert_serving, binary):
    as_int = FP32_4.astype(np.int32)
    inputs = [fp32_input("INPUT0", FP32_4, binary=binary), fp32_input("INPUT1", as_int, "INT32", binary=binary)]
    error = _client_error(client, "add_sub", inputs)
    assert error.status() == "400"
    assert "input 'INPUT1' of model 'add_sub' has datatype INT32, expected FP32" in error.message()
    assert_serving()


@pytest.mark.parametrize("shape", [[5], [2, 2], []])
def test_shape_mismatch_with_config_dims(client, assert_serving, shape):
    data = np.zeros(shape, dtype=np.float32)
    inputs = [fp32_input("INPUT0", FP32_4), fp32_input("INPUT1", data)]
    error = _client_error(client, "add_sub", inputs)
    assert error.status() == "400"
    assert f"input 'INPUT1' of model 'add_sub' has shape {shape}, expected [4]" in error.message()
    assert_serving()


def test_more_rows_than_max_batch_size(client, assert_serving):
    rows = np.zeros((9, 2), dtype=np.float32)
    error = _client_error(client, "batched_scale", [fp32_input("X", rows)])
    assert error.status() == "400"
    assert "batch size 9 of input 'X' is out of range for model 'batched_scale'" in error.message()
    assert "max_batch_size 8" in error.message()
    assert_serving()


def test_batched_model_needs_a_batch_dimension(client, assert_serving):
    scalar = np.zeros((), dtype=np.float32)
    error = _client_error(client, "batched_scale", [fp32_input("X", scalar)])
    assert "needs a batch dimension first (max_batch_size is 8)" in error.message()
    empty_batch = np.zeros((0, 2), dtype=np.float32)
    error = _client_error(client, "batched_scale", [fp32_input("X", empty_batch)])
    assert "batch size 0 of input 'X' is out of range" in error.message()
    assert_serving()


def test_failing_model_is_400_and_the_model_keeps_serving(probe_client):
    bad = np.array([[1, -1]], dtype=np.int32)
    error = _client_error(probe_client, "flaky", [fp32_input("X", bad, "INT32")])
    assert error.status() == "400"
    assert "flaky refuses negative values" in error.message()
    good = np.array([[1, 2]], dtype=np.int32)
    result = probe_client.infer("flaky", [fp32_input("X", good, "INT32")])
    np.testing.assert_array_equal(result.as_numpy("Y"), good)


# -- a model that exists but is not ready -------------------------------------------------------


def test_model_that_failed_to_load_is_503_with_its_reason(probe_server, probe_client):
    body = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [1]}]}
    response = post_json(probe_server.http_url, "/v2/models/broken/infer", body)
    assert response.status == 503
    assert "Request for unknown model: 'broken' has no available versions" in response.error
    assert "RuntimeError: broken on purpose" in response.error
    metadata = send(probe_server.http_url, "GET", "/v2/models/broken")
    assert metadata.status == 503 and "broken on purpose" in metadata.error
    assert not probe_client.is_model_ready("broken")
    with pytest.raises(InferenceServerException) as caught:
        probe_client.get_model_config("broken")
    assert caught.value.status() == "503"
    rows = [row for row in probe_client.get_model_repository_index() if row["name"] == "broken"]
    assert rows == [
        {"name": "broken", "version": "1", "state": "UNAVAILABLE", "reason": "RuntimeError: broken on purpose"}
    ]
    good = np.array([[7]], dtype=np.int32)
    result = probe_client.infer("identity_int32", [fp32_input("INPUT", good, "INT32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), good)
