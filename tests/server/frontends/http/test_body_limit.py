"""--http-max-input-size: a body past the limit gets 413 naming the limit and the flag, before it is read."""

from __future__ import annotations

import gzip
import json
import socket

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.frontends.http.probe_models import good_add_sub
from tests.server.frontends.http.raw_http import send
from tests.server_harness import copy_example_model, start_server

LIMIT = 4096


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("body_limit_models")
    copy_example_model(repository, "add_sub")
    running = start_server([repository], http_max_input_size=LIMIT)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def small_limit_client(small_limit_server):
    client = httpclient.InferenceServerClient(small_limit_server.http_url, network_timeout=60)
    yield client
    client.close()


def _infer_body(num_values: int) -> bytes:
    data = [1.0] * num_values
    inputs = [{"name": n, "datatype": "FP32", "shape": [num_values], "data": data} for n in ("INPUT0", "INPUT1")]
    return json.dumps({"inputs": inputs}).encode()


def _assert_names_the_limit(message: str) -> None:
    assert str(LIMIT) in message and "--http-max-input-size" in message


def test_a_body_over_the_limit_gets_413(small_limit_server, small_limit_client):
    body = _infer_body(2000)
    assert len(body) > LIMIT
    response = send(small_limit_server.http_url, "POST", "/v2/models/add_sub/infer", body)
    assert response.status == 413
    _assert_names_the_limit(response.error)
    assert str(len(body)) in response.error
    good_add_sub(small_limit_client)


def test_a_body_under_the_limit_is_served(small_limit_server, small_limit_client):
    body = _infer_body(4)
    assert len(body) < LIMIT
    assert send(small_limit_server.http_url, "POST", "/v2/models/add_sub/infer", body).status == 200
    good_add_sub(small_limit_client)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(small_limit_server, small_limit_client):
    """The client sends only the headers of a 10 GiB body: the 413 comes without one body byte read."""
    host, port = small_limit_server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10737418240\r\n\r\n"
        )
        reply = _read_until_closed(connection)
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line
    _assert_names_the_limit(rest.decode())
    good_add_sub(small_limit_client)


def test_a_chunked_body_over_the_limit_gets_413(small_limit_server, small_limit_client):
    """No Content-Length (http.client sends an iterable chunked): aiohttp stops reading at the limit."""
    chunks = iter([_infer_body(1000), _infer_body(1000)])
    response = send(
        small_limit_server.http_url,
        "POST",
        "/v2/models/add_sub/infer",
        chunks,
        {"Content-Type": "application/json"},
    )
    assert response.status == 413
    _assert_names_the_limit(response.error)
    good_add_sub(small_limit_client)


def test_a_gzip_body_is_limited_by_its_decoded_size(small_limit_server, small_limit_client):
    """A compressed bomb: 100 KiB of JSON that gzip packs far under the limit."""
    body = gzip.compress(_infer_body(20000))
    assert len(body) < LIMIT
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = send(small_limit_server.http_url, "POST", "/v2/models/add_sub/infer", body, headers)
    assert response.status == 413
    _assert_names_the_limit(response.error)
    good_add_sub(small_limit_client)


def test_tritonclient_sees_the_413(small_limit_client):
    a = np.ones(2000, dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [2000], "FP32"), httpclient.InferInput("INPUT1", [2000], "FP32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a, binary_data=False)
    with pytest.raises(Exception, match="--http-max-input-size"):
        small_limit_client.infer("add_sub", inputs)
    good_add_sub(small_limit_client)


def test_the_openai_routes_answer_an_openai_error_object(small_limit_server, small_limit_client):
    body = json.dumps({"model": "m", "prompt": "x" * (2 * LIMIT)})
    response = send(small_limit_server.http_url, "POST", "/v1/completions", body)
    assert response.status == 413
    error = response.json()["error"]
    _assert_names_the_limit(error["message"])
    assert error["type"] == "invalid_request_error"
    good_add_sub(small_limit_client)


def _read_until_closed(connection: socket.socket) -> bytes:
    reply = b""
    while chunk := connection.recv(65536):
        reply += chunk
        if b"\r\n\r\n" in reply and reply.endswith(b"}"):
            break
    return reply
