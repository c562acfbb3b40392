"""Malformed binary tensor data gets 400 with a message naming the problem, and the server keeps serving:
each test ends with a good infer."""

import json
import struct

import numpy as np
import pytest

from tests.server.frontends.http.bad_request_helpers import ADD_SUB, FP32_4, fp32, fp32_input, good_add_sub_json
from tests.server.frontends.http.raw_http import post_binary


def _binary_header(size0: int = 16, size1: int = 16) -> dict:
    return {"inputs": [fp32("INPUT0", [4], binary_size=size0), fp32("INPUT1", [4], binary_size=size1)]}


def test_binary_data_size_not_matching_the_shape(example_server, assert_serving):
    response = post_binary(
        example_server.http_url, ADD_SUB, _binary_header(16, 12), FP32_4.tobytes() + FP32_4.tobytes()[:12]
    )
    assert response.status == 400
    assert "input 'INPUT1': binary_data_size is 12 bytes but shape [4] of FP32 needs 16" in response.error
    assert_serving()


def test_binary_data_size_past_the_end_of_the_body(example_server, assert_serving):
    response = post_binary(example_server.http_url, ADD_SUB, _binary_header(16, 20), FP32_4.tobytes() * 2)
    assert response.status == 400
    assert (
        "input 'INPUT1': binary_data_size 20 runs past the end of the request body (16 binary bytes left)"
        in response.error
    )
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
    header = good_add_sub_json()
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
        (
            _bytes_elements(b"one") + struct.pack("<I", 50) + b"short",
            "BYTES element of 50 bytes at byte 7 runs past the end",
        ),
        (_bytes_elements(b"one") + b"\x01\x00", "truncated BYTES element length at byte 7"),
    ],
)
def test_malformed_binary_bytes(probe_server, probe_client, payload, fragment):
    header = {
        "inputs": [
            {"name": "INPUT", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": len(payload)}}
        ]
    }
    response = post_binary(probe_server.http_url, "/v2/models/identity_bytes/infer", header, payload)
    assert response.status == 400
    assert fragment in response.error
    good = np.array([[b"x", b"\xff"]], dtype=np.object_)
    result = probe_client.infer("identity_bytes", [fp32_input("INPUT", good, "BYTES")])
    assert list(result.as_numpy("OUTPUT").reshape(-1)) == [b"x", b"\xff"]
