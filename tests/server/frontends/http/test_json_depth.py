"""JSON nested past the bound (100 levels) gets 400 naming the limit on every route that parses JSON, however
deep it goes (a RecursionError never escapes as a 500), and the server keeps serving."""

import json

import pytest

from modelgate.core.bounded_json import MAX_JSON_DEPTH
from tests.server.frontends.http.bad_request_helpers import ADD_SUB, fp32, good_add_sub_json
from tests.server.frontends.http.raw_http import post_binary, send

ROUTES = [
    ADD_SUB,
    "/v2/models/add_sub/generate",
    "/v2/models/add_sub/generate_stream",
    "/v2/repository/index",
    "/v2/logging",
]


def nested(depth: int) -> str:
    """`depth` levels in all: an object holding arrays."""
    return '{"inputs": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
@pytest.mark.parametrize("path", ROUTES)
def test_json_past_the_depth_bound_is_400(example_server, assert_serving, path, depth):
    response = send(example_server.http_url, "POST", path, nested(depth), {"Content-Type": "application/json"})
    assert response.status == 400
    assert f"more than {MAX_JSON_DEPTH} levels deep" in response.error
    assert_serving()


def test_json_at_the_depth_bound_is_parsed(example_server, assert_serving):
    """100 levels parse: the request fails on what it says (an input of no such shape), not on its depth."""
    body = good_add_sub_json()
    body["inputs"][0]["data"] = json.loads("[" * (MAX_JSON_DEPTH - 3) + "1" + "]" * (MAX_JSON_DEPTH - 3))
    response = send(example_server.http_url, "POST", ADD_SUB, json.dumps(body), {"Content-Type": "application/json"})
    assert response.status == 400
    assert "levels deep" not in response.error
    assert_serving()


def test_the_binary_header_is_bounded_too(example_server, assert_serving):
    header = {"inputs": [fp32("INPUT0", [4], binary_size=16), fp32("INPUT1", [4], binary_size=16)]}
    header["parameters"] = {"x": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)}
    response = post_binary(example_server.http_url, ADD_SUB, header, bytes(32))
    assert response.status == 400
    assert f"more than {MAX_JSON_DEPTH} levels deep" in response.error
    assert_serving()


def test_deep_data_in_a_binary_body_does_not_count(example_server, assert_serving):
    """Only the JSON header is JSON: `[` bytes in the tensor data are not nesting."""
    header = {"inputs": [fp32("INPUT0", [4], binary_size=16), fp32("INPUT1", [4], binary_size=16)]}
    response = post_binary(example_server.http_url, ADD_SUB, header, b"[" * 32)
    assert response.status == 200
    assert_serving()
