"""Bad infer requests get 400 (404 for missing models and versions) with a message naming the
problem, and the server keeps serving: every test ends with a good infer (`assert_serving`)."""

import gzip
import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server.frontends.http.raw_http import post_binary, post_json, send

ADD_SUB = "/v2/models/add_sub/infer"
FP32_4 = np.array([1, 2, 3, 4], dtype=np.float32)


def _fp32(name: str, shape: list, data=None, binary_size: int | None = None) -> dict:
    entry = {"name": name, "datatype": "FP32", "shape": shape}
    if data is not None:
        entry["data"] = data
    if binary_size is not None:
        entry["parameters"] = {"binary_data_size": binary_size}
    return entry


def _good_add_sub_json(**changes) -> dict:
    body = {"inputs": [_fp32("INPUT0", [4], [1, 2, 3, 4]), _fp32("INPUT1", [4], [1, 1, 1, 1])]}
    body.update(changes)
    return body


def _client_error(client, model: str, inputs: list, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs, **kwargs)
    return caught.value


def _fp32_input(name: str, data: np.ndarray, datatype: str = "FP32", binary: bool = True):
    return httpclient.InferInput(name, list(data.shape), datatype).set_data_from_numpy(data, binary_data=binary)


# -- unknown targets, through tritonclient -----------------------------------------------------


def test_unknown_model_is_404(client, example_server, assert_serving):
    error = _client_error(client, "no_such_model", [_fp32_input("INPUT0", FP32_4)])
    assert error.status() == "404"
    assert "unknown model: 'no_such_model' is not found or not loaded" in error.message()
    raw = post_json(example_server.http_url, "/v2/models/no_such_model/infer", _good_add_sub_json())
    assert raw.status == 404 and "unknown model" in raw.error
    assert_serving()


def test_unknown_version_is_404(client, example_server, assert_serving):
    inputs = [_fp32_input("INPUT0", FP32_4), _fp32_input("INPUT1", FP32_4)]
    error = _client_error(client, "add_sub", inputs, model_version="7")
    assert error.status() == "404"
    assert "model 'add_sub' has no version 7; ready versions: [1]" in error.message()
    raw = post_json(example_server.http_url, "/v2/models/add_sub/versions/x1/infer", _good_add_sub_json())
    assert raw.status == 400 and "model version must be an integer, got 'x1'" in raw.error
    assert_serving()


# -- inputs and outputs that do not fit the model, through tritonclient ---------------------------


def test_unknown_input(client, assert_serving):
    inputs = [_fp32_input("INPUT0", FP32_4), _fp32_input("INPUT1", FP32_4), _fp32_input("BOGUS", FP32_4)]
    error = _client_error(client, "add_sub", inputs)
    assert error.status() == "400"
    assert "unexpected inference input 'BOGUS' for model 'add_sub'; its inputs are: INPUT0, INPUT1" in error.message()
    assert_serving()


def test_missing_input(client, assert_serving):
    error = _client_error(client, "add_sub", [_fp32_input("INPUT0", FP32_4)])
    assert error.status() == "400"
    assert "model 'add_sub' expects input(s) 'INPUT1' that the request does not have" in error.message()
    assert_serving()


def test_unknown_requested_output(client, assert_serving):
    inputs = [_fp32_input("INPUT0", FP32_4), _fp32_input("INPUT1", FP32_4)]
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("NOPE")]
    error = _client_error(client, "add_sub", inputs, outputs=outputs)
    assert error.status() == "400"
    assert "unexpected inference output 'NOPE' for model 'add_sub'; its outputs are: OUTPUT0, OUTPUT1" in error.message()
    assert_serving()


@pytest.mark.parametrize("binary", [False, True])
def test_wrong_datatype(client, assert_serving, binary):
    as_int = FP32_4.astype(np.int32)
    inputs = [_fp32_input("INPUT0", FP32_4, binary=binary), _fp32_input("INPUT1", as_int, "INT32", binary=binary)]
    error = _client_error(client, "add_sub", inputs)
    assert error.status() == "400"
    assert "input 'INPUT1' of model 'add_sub' has datatype INT32, expected FP32" in error.message()
    assert_serving()


@pytest.mark.parametrize("shape", [[5], [2, 2], []])
def test_shape_mismatch_with_config_dims(client, assert_serving, shape):
    data = np.zeros(shape, dtype=np.float32)
    inputs = [_fp32_input("INPUT0", FP32_4), _fp32_input("INPUT1", data)]
    error = _client_error(client, "add_sub", inputs)
    assert error.status() == "400"
    assert f"input 'INPUT1' of model 'add_sub' has shape {shape}, expected [4]" in error.message()
    assert_serving()


def test_more_rows_than_max_batch_size(client, assert_serving):
    rows = np.zeros((9, 2), dtype=np.float32)
    error = _client_error(client, "batched_scale", [_fp32_input("X", rows)])
    assert error.status() == "400"
    assert "batch size 9 of input 'X' is out of range for model 'batched_scale'" in error.message()
    assert "max_batch_size 8" in error.message()
    assert_serving()


def test_batched_model_needs_a_batch_dimension(client, assert_serving):
    scalar = np.zeros((), dtype=np.float32)
    error = _client_error(client, "batched_scale", [_fp32_input("X", scalar)])
    assert "needs a batch dimension first (max_batch_size is 8)" in error.message()
    empty_batch = np.zeros((0, 2), dtype=np.float32)
    error = _client_error(client, "batched_scale", [_fp32_input("X", empty_batch)])
    assert "batch size 0 of input 'X' is out of range" in error.message()
    assert_serving()


def test_failing_model_is_400_and_the_model_keeps_serving(probe_client):
    bad = np.array([[1, -1]], dtype=np.int32)
    error = _client_error(probe_client, "flaky", [_fp32_input("X", bad, "INT32")])
    assert error.status() == "400"
    assert "flaky refuses negative values" in error.message()
    good = np.array([[1, 2]], dtype=np.int32)
    result = probe_client.infer("flaky", [_fp32_input("X", good, "INT32")])
    np.testing.assert_array_equal(result.as_numpy("Y"), good)


# -- malformed bodies, through raw HTTP ---------------------------------------------------------


BAD_JSON_BODIES = [
    ("{not json", "inference request is not valid JSON"),
    ("", "inference request must be a JSON object"),
    ("[1, 2]", "inference request must be a JSON object"),
    ('{"inputs": [1, 2', "inference request is not valid JSON"),
    ("{}", "inference request is missing 'inputs'"),
    ('{"inputs": {}}', "inference request: 'inputs' must be an array"),
    ('{"inputs": [7]}', "inputs[0] must be a JSON object"),
    ('{"inputs": [{"datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}', "inputs[0] is missing 'name'"),
    ('{"inputs": [{"name": "INPUT0", "shape": [4], "data": [1, 2, 3, 4]}]}', "input 'INPUT0' is missing 'datatype'"),
    ('{"inputs": [{"name": "INPUT0", "datatype": "FP32", "data": [1]}]}', "input 'INPUT0' is missing 'shape'"),
    ('{"inputs": [], "id": 5}', "inference request: 'id' must be a string"),
    ('{"inputs": [], "parameters": [1]}', "inference request: 'parameters' must be an object"),
    ('{"inputs": [], "outputs": {}}', "inference request: 'outputs' must be an array"),
    ('{"inputs": [], "outputs": ["OUTPUT0"]}', "outputs[0] must be a JSON object"),
    (b'{"inputs": [\xff]}', "inference request is not valid JSON"),
]


@pytest.mark.parametrize("body, fragment", BAD_JSON_BODIES)
def test_malformed_json_body(example_server, assert_serving, body, fragment):
    response = send(example_server.http_url, "POST", ADD_SUB, body, {"Content-Type": "application/json"})
    assert response.status == 400
    assert fragment in response.error
    assert_serving()


BAD_INPUTS = [
    (_fp32("INPUT1", [4], [1, 2, 3]), "input 'INPUT1': has 3 elements in 'data' but shape [4] needs 4"),
    (_fp32("INPUT1", [4], [[1, 2], [3, 4], [5, 6]]), "input 'INPUT1': has 6 elements in 'data' but shape [4] needs 4"),
    (_fp32("INPUT1", [4], [[1, 2], [3]]), "input 'INPUT1': 'data' is a ragged nested array"),
    (_fp32("INPUT1", [4], [1, [2, 3], 4]), "input 'INPUT1': 'data' is a ragged nested array"),
    (_fp32("INPUT1", [4], "1,2,3,4"), "input 'INPUT1': 'data' must be a JSON array, got str"),
    (_fp32("INPUT1", [4], ["1", "2", "3", "4"]), "input 'INPUT1': 'data' must hold numbers for FP32"),
    (_fp32("INPUT1", [4], [True, False, True, False]), "'data' must hold numbers for FP32"),
    (_fp32("INPUT1", [4], [1, None, 3, 4]), "'data' must hold numbers for FP32"),
    (_fp32("INPUT1", [-4], [1, 2, 3, 4]), "input 'INPUT1': 'shape' must be a list of non-negative integers"),
    (_fp32("INPUT1", [4.0], [1, 2, 3, 4]), "'shape' must be a list of non-negative integers"),
    (_fp32("INPUT1", [4]), "input 'INPUT1' has neither 'data' nor a 'binary_data_size' parameter"),
    ({**_fp32("INPUT1", [4], [1, 2, 3, 4]), "datatype": "FP8"}, "input 'INPUT1' datatype: unknown datatype 'FP8'"),
    ({**_fp32("INPUT1", [4], [1, 2, 3, 4]), "datatype": "TYPE_FP32"}, "unknown datatype 'TYPE_FP32'"),
    ({**_fp32("INPUT1", [4], [1, 2, 3, 4]), "parameters": [1]}, "input 'INPUT1': 'parameters' must be an object"),
    (_fp32("INPUT0", [4], [1, 2, 3, 4]), "input 'INPUT0' appears more than once in 'inputs'"),
]


@pytest.mark.parametrize("second_input, fragment", BAD_INPUTS)
def test_bad_json_input(example_server, assert_serving, second_input, fragment):
    body = {"inputs": [_fp32("INPUT0", [4], [1, 2, 3, 4]), second_input]}
    response = post_json(example_server.http_url, ADD_SUB, body)
    assert response.status == 400
    assert fragment in response.error
    assert_serving()


BAD_OUTPUTS = [
    ([{"name": "OUTPUT0"}, {"name": "OUTPUT0"}], "output 'OUTPUT0' is requested more than once"),
    ([{"parameters": {}}], "outputs[0] is missing 'name'"),
    ([{"name": "OUTPUT0", "parameters": {"classification": 2}}], "the 'classification' parameter is not supported"),
]


@pytest.mark.parametrize("outputs, fragment", BAD_OUTPUTS)
def test_bad_requested_outputs(example_server, assert_serving, outputs, fragment):
    response = post_json(example_server.http_url, ADD_SUB, _good_add_sub_json(outputs=outputs))
    assert response.status == 400
    assert fragment in response.error
    assert_serving()


# -- typed JSON data against the identity models -------------------------------------------------


BAD_TYPED_DATA = [
    ("BOOL", [1, 0], "'data' must hold true/false for BOOL"),
    ("BOOL", [1.0, 0.0], "'data' must hold true/false for BOOL"),
    ("BOOL", ["true", "false"], "'data' must hold true/false for BOOL"),
    ("UINT8", [0, 256], "'data' has values out of range for UINT8"),
    ("UINT8", [-1, 0], "'data' has values out of range for UINT8"),
    ("INT8", [-129, 0], "'data' has values out of range for INT8"),
    ("INT16", [0, 32768], "'data' has values out of range for INT16"),
    ("UINT32", [0, 2**32], "'data' has values out of range for UINT32"),
    ("INT32", [2**31, 0], "'data' has values out of range for INT32"),
    ("INT64", [0, 2**63], "'data' has values out of range for INT64"),
    ("INT64", [-1, 2**63], "'data' has values out of range for INT64"),
    ("UINT64", [0, 2**64], "'data' has values out of range for UINT64"),
    ("UINT64", [-1, 2**63], "'data' has values out of range for UINT64"),
    ("INT32", [1.5, 2], "'data' must hold integers for INT32"),
    ("INT32", [1.0, 2.0], "'data' must hold integers for INT32"),
    ("UINT16", [True, False], "'data' must hold integers for UINT16"),
    ("INT32", [True, 2], "'data' must hold integers for INT32"),
    ("FP32", [[1.5], [False]], "'data' must hold numbers for FP32"),
    ("INT32", [[1, 2], [3]], "'data' is a ragged nested array"),
    ("FP64", [[1.0], [2.0, 3.0]], "'data' is a ragged nested array"),
    ("BYTES", ["a", 1], "BYTES 'data' elements must be strings, element 1 is not"),
    ("BYTES", [["a", "b"], [None, "d"]], "BYTES 'data' elements must be strings, element 2 is not"),
    ("BYTES", ["a", "b", "c"], "has 3 elements in 'data' but shape [1, 2] needs 2"),
]


@pytest.mark.parametrize("datatype, data, fragment", BAD_TYPED_DATA)
def test_bad_typed_json_data(probe_server, probe_client, datatype, data, fragment):
    path = f"/v2/models/identity_{datatype.lower()}/infer"
    body = {"inputs": [{"name": "INPUT", "datatype": datatype, "shape": [1, 2], "data": data}]}
    response = post_json(probe_server.http_url, path, body)
    assert response.status == 400
    assert f"input 'INPUT': {fragment}" in response.error
    good = np.array([[1, 2]], dtype=np.int32)
    result = probe_client.infer("identity_int32", [_fp32_input("INPUT", good, "INT32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), good)


def test_extreme_64_bit_integers_in_json_are_exact(probe_server):
    """Python-int JSON values that numpy alone would turn into float64 keep every digit."""
    cases = {"UINT64": [0, 2**64 - 1], "INT64": [-(2**63), 2**63 - 1]}
    for datatype, data in cases.items():
        body = {"inputs": [{"name": "INPUT", "datatype": datatype, "shape": [1, 2], "data": data}]}
        response = post_json(probe_server.http_url, f"/v2/models/identity_{datatype.lower()}/infer", body)
        assert response.status == 200, response.body
        assert response.json()["outputs"][0]["data"] == data


# -- binary tensor data ------------------------------------------------------------------------


def _binary_header(size0: int = 16, size1: int = 16) -> dict:
    return {"inputs": [_fp32("INPUT0", [4], binary_size=size0), _fp32("INPUT1", [4], binary_size=size1)]}


def test_binary_data_size_not_matching_the_shape(example_server, assert_serving):
    response = post_binary(example_server.http_url, ADD_SUB, _binary_header(16, 12), FP32_4.tobytes() + FP32_4.tobytes()[:12])
    assert response.status == 400
    assert "input 'INPUT1': binary_data_size is 12 bytes but shape [4] of FP32 needs 16" in response.error
    assert_serving()


def test_binary_data_size_past_the_end_of_the_body(example_server, assert_serving):
    response = post_binary(example_server.http_url, ADD_SUB, _binary_header(16, 20), FP32_4.tobytes() * 2)
    assert response.status == 400
    assert "input 'INPUT1': binary_data_size 20 runs past the end of the request body (16 binary bytes left)" in response.error
    assert_serving()


@pytest.mark.parametrize("size", [-16, "16", 16.0, True])
def test_binary_data_size_not_a_non_negative_integer(example_server, assert_serving, size):
    response = post_binary(example_server.http_url, ADD_SUB, _binary_header(16, size), FP32_4.tobytes() * 2)
    assert response.status == 400
    assert "input 'INPUT1': binary_data_size must be a non-negative integer" in response.error
    assert_serving()


def test_trailing_bytes_after_binary_data(example_server, assert_serving):
    response = post_binary(example_server.http_url, ADD_SUB, _binary_header(), FP32_4.tobytes() * 2 + b"xyz")
    assert response.status == 400
    assert "request body has 3 bytes after the inputs' binary data" in response.error
    assert_serving()


def test_trailing_bytes_after_a_json_only_header(example_server, assert_serving):
    header = _good_add_sub_json()
    response = post_binary(example_server.http_url, ADD_SUB, header, b"\x00" * 8)
    assert response.status == 400
    assert "request body has 8 bytes after the inputs' binary data" in response.error
    assert_serving()


@pytest.mark.parametrize(
    "header_length, fragment",
    [
        ("abc", "Inference-Header-Content-Length must be a non-negative integer, got 'abc'"),
        ("1.5", "Inference-Header-Content-Length must be a non-negative integer, got '1.5'"),
        ("-1", "Inference-Header-Content-Length must be a non-negative integer, got '-1'"),
        ("1_0", "Inference-Header-Content-Length must be a non-negative integer, got '1_0'"),
        ("+10", "Inference-Header-Content-Length must be a non-negative integer, got '+10'"),
        ("999999", "Inference-Header-Content-Length is 999999 but the body has"),
        ("0", "inference request must be a JSON object"),
        ("10", "inference request is not valid JSON"),
    ],
)
def test_bad_inference_header_content_length(example_server, assert_serving, header_length, fragment):
    response = post_binary(example_server.http_url, ADD_SUB, _binary_header(), FP32_4.tobytes() * 2, header_length)
    assert response.status == 400
    assert fragment in response.error
    assert_serving()


def test_header_length_one_byte_too_long_eats_binary_data(example_server, assert_serving):
    header = _binary_header()
    length = len(json.dumps(header)) + 1
    response = post_binary(example_server.http_url, ADD_SUB, header, FP32_4.tobytes() * 2, length)
    assert response.status == 400
    assert "inference request is not valid JSON" in response.error
    assert_serving()


def _bytes_elements(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (_bytes_elements(b"one"), "input 'INPUT': expected 2 BYTES elements for its shape, got 1"),
        (_bytes_elements(b"a", b"b", b"c"), "expected 2 BYTES elements for its shape, got 3"),
        (_bytes_elements(b"one") + struct.pack("<I", 50) + b"short", "BYTES element of 50 bytes at byte 7 runs past the end"),
        (_bytes_elements(b"one") + b"\x01\x00", "truncated BYTES element length at byte 7"),
    ],
)
def test_malformed_binary_bytes(probe_server, probe_client, payload, fragment):
    header = {
        "inputs": [{"name": "INPUT", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": len(payload)}}]
    }
    response = post_binary(probe_server.http_url, "/v2/models/identity_bytes/infer", header, payload)
    assert response.status == 400
    assert fragment in response.error
    good = np.array([[b"x", b"\xff"]], dtype=np.object_)
    result = probe_client.infer("identity_bytes", [_fp32_input("INPUT", good, "BYTES")])
    assert list(result.as_numpy("OUTPUT").reshape(-1)) == [b"x", b"\xff"]


# -- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_body_that_is_not_what_content_encoding_says(example_server, assert_serving, encoding):
    body = json.dumps(_good_add_sub_json()).encode()
    response = send(example_server.http_url, "POST", ADD_SUB, body, {"Content-Encoding": encoding})
    assert response.status == 400
    assert encoding in response.error.lower() or "decompress" in response.error.lower()
    assert_serving()


def test_gzip_body_with_a_bad_inner_request(example_server, assert_serving):
    body = gzip.compress(json.dumps(_good_add_sub_json(inputs=[_fp32("INPUT0", [4], [1, 2, 3])])).encode())
    response = send(example_server.http_url, "POST", ADD_SUB, body, {"Content-Encoding": "gzip"})
    assert response.status == 400
    assert "input 'INPUT0': has 3 elements in 'data' but shape [4] needs 4" in response.error
    assert_serving()


# -- a model that exists but is not ready -------------------------------------------------------


def test_model_that_failed_to_load_is_503_with_its_reason(probe_server, probe_client):
    body = {"inputs": [{"name": "X", "datatype": "INT32", "shape": [1], "data": [1]}]}
    response = post_json(probe_server.http_url, "/v2/models/broken/infer", body)
    assert response.status == 503
    assert "model 'broken' has no ready version" in response.error
    assert "RuntimeError: broken on purpose" in response.error
    metadata = send(probe_server.http_url, "GET", "/v2/models/broken")
    assert metadata.status == 503 and "broken on purpose" in metadata.error
    assert not probe_client.is_model_ready("broken")
    with pytest.raises(InferenceServerException) as caught:
        probe_client.get_model_config("broken")
    assert caught.value.status() == "503"
    rows = [row for row in probe_client.get_model_repository_index() if row["name"] == "broken"]
    assert rows == [{"name": "broken", "version": "1", "state": "UNAVAILABLE", "reason": "RuntimeError: broken on purpose"}]
    good = np.array([[7]], dtype=np.int32)
    result = probe_client.infer("identity_int32", [_fp32_input("INPUT", good, "INT32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), good)
