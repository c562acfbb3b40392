"""Malformed JSON infer request bodies (their structure, typed data, content encodings) get 400 with a message
naming the problem, and the server keeps serving: each test ends with a good infer."""

import gzip
import json

import numpy as np
import pytest

from tests.server.frontends.http.bad_request_helpers import ADD_SUB, fp32, fp32_input, good_add_sub_json
from tests.server.frontends.http.raw_http import post_json, send

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
    (fp32("INPUT1", [4], [1, 2, 3]), "input 'INPUT1': has 3 elements in 'data' but shape [4] needs 4"),
    (fp32("INPUT1", [4], [[1, 2], [3, 4], [5, 6]]), "input 'INPUT1': has 6 elements in 'data' but shape [4] needs 4"),
    (fp32("INPUT1", [4], [[1, 2], [3]]), "input 'INPUT1': 'data' is a ragged nested array"),
    (fp32("INPUT1", [4], [1, [2, 3], 4]), "input 'INPUT1': 'data' is a ragged nested array"),
    (fp32("INPUT1", [4], "1,2,3,4"), "input 'INPUT1': 'data' must be a JSON array, got str"),
    (fp32("INPUT1", [4], ["1", "2", "3", "4"]), "input 'INPUT1': 'data' must hold numbers for FP32"),
    (fp32("INPUT1", [4], [True, False, True, False]), "'data' must hold numbers for FP32"),
    (fp32("INPUT1", [4], [1, None, 3, 4]), "'data' must hold numbers for FP32"),
    (fp32("INPUT1", [-4], [1, 2, 3, 4]), "input 'INPUT1': 'shape' must be a list of non-negative integers"),
    (fp32("INPUT1", [4.0], [1, 2, 3, 4]), "'shape' must be a list of non-negative integers"),
    (fp32("INPUT1", [4]), "input 'INPUT1' has neither 'data' nor a 'binary_data_size' parameter"),
    ({**fp32("INPUT1", [4], [1, 2, 3, 4]), "datatype": "FP8"}, "input 'INPUT1' datatype: unknown datatype 'FP8'"),
    ({**fp32("INPUT1", [4], [1, 2, 3, 4]), "datatype": "TYPE_FP32"}, "unknown datatype 'TYPE_FP32'"),
    ({**fp32("INPUT1", [4], [1, 2, 3, 4]), "parameters": [1]}, "input 'INPUT1': 'parameters' must be an object"),
    (fp32("INPUT0", [4], [1, 2, 3, 4]), "input 'INPUT0' appears more than once in 'inputs'"),
]


@pytest.mark.parametrize("second_input, fragment", BAD_INPUTS)
def test_bad_json_input(example_server, assert_serving, second_input, fragment):
    body = {"inputs": [fp32("INPUT0", [4], [1, 2, 3, 4]), second_input]}
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
    response = post_json(example_server.http_url, ADD_SUB, good_add_sub_json(outputs=outputs))
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
    result = probe_client.infer("identity_int32", [fp32_input("INPUT", good, "INT32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), good)


def test_extreme_64_bit_integers_in_json_are_exact(probe_server):
    """Python-int JSON values that numpy alone would turn into float64 keep every digit."""
    cases = {"UINT64": [0, 2**64 - 1], "INT64": [-(2**63), 2**63 - 1]}
    for datatype, data in cases.items():
        body = {"inputs": [{"name": "INPUT", "datatype": datatype, "shape": [1, 2], "data": data}]}
        response = post_json(probe_server.http_url, f"/v2/models/identity_{datatype.lower()}/infer", body)
        assert response.status == 200, response.body
        assert response.json()["outputs"][0]["data"] == data


# -- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_body_that_is_not_what_content_encoding_says(example_server, assert_serving, encoding):
    body = json.dumps(good_add_sub_json()).encode()
    response = send(example_server.http_url, "POST", ADD_SUB, body, {"Content-Encoding": encoding})
    assert response.status == 400
    assert encoding in response.error.lower() or "decompress" in response.error.lower()
    assert_serving()


def test_gzip_body_with_a_bad_inner_request(example_server, assert_serving):
    body = gzip.compress(json.dumps(good_add_sub_json(inputs=[fp32("INPUT0", [4], [1, 2, 3])])).encode())
    response = send(example_server.http_url, "POST", ADD_SUB, body, {"Content-Encoding": "gzip"})
    assert response.status == 400
    assert "input 'INPUT0': has 3 elements in 'data' but shape [4] needs 4" in response.error
    assert_serving()
