"""Triton's generate extension: POST .../generate (one JSON response) and .../generate_stream (SSE)."""

import asyncio
import json
import socket
import time

import aiohttp
import pytest
import requests

from tests.server.frontends.grpc.grpc_helpers import wait_for_file
from tests.server.frontends.grpc.stream_models import write_stream_models
from tests.server.frontends.http.probe_models import ECHO_REQUEST_CONFIG, ECHO_REQUEST_MODEL
from tests.server_harness import copy_example_model, start_server, write_model

TIMEOUT_S = 10

BYTES_OUT_CONFIG = """
    name: "bytes_out"
    backend: "python"
    max_batch_size: 0
    input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
    output [ { name: "Y" data_type: TYPE_STRING dims: [ 2 ] } ]
"""

# X=0: two UTF-8 strings; otherwise bytes that are not UTF-8.
BYTES_OUT_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()[0]
                y = [b"ok", "\\u00e9".encode()] if x == 0 else [b"ok", b"\\xff\\xfe"]
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", np.array(y, dtype=np.object_))]))
            return responses
"""

# Streams COUNT responses of SIZE characters each: enough bytes to back up behind a client that does not read.
BIG_EVENTS_CONFIG = """
    name: "big_events"
    backend: "python"
    max_batch_size: 0
    model_transaction_policy { decoupled: true }
    input [ { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "SIZE" data_type: TYPE_INT32 dims: [ 1 ] } ]
    output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

BIG_EVENTS_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
                size = int(pb_utils.get_input_tensor_by_name(request, "SIZE").as_numpy()[0])
                for number in range(count):
                    out = pb_utils.Tensor("OUT", np.array([number], dtype=np.int32))
                    text = pb_utils.Tensor("TEXT", np.array([b"x" * size], dtype=np.object_))
                    sender.send(pb_utils.InferenceResponse([out, text]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
"""


@pytest.fixture(scope="module")
def generate_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("generate_models")
    write_stream_models(repository)
    write_model(repository, "echo_request", ECHO_REQUEST_CONFIG, ECHO_REQUEST_MODEL)
    write_model(repository, "bytes_out", BYTES_OUT_CONFIG, BYTES_OUT_MODEL)
    write_model(repository, "big_events", BIG_EVENTS_CONFIG, BIG_EVENTS_MODEL)
    copy_example_model(repository, "batched_scale")
    running = start_server([repository])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def url(generate_server):
    return f"http://{generate_server.http_url}/v2/models"


def generate(url: str, model: str, body, route: str = "generate") -> requests.Response:
    payload = {"data": body} if isinstance(body, str) else {"json": body}
    return requests.post(f"{url}/{model}/{route}", timeout=TIMEOUT_S, **payload)


def sse_events(response: requests.Response) -> list[dict]:
    """The `data:` events of a text/event-stream body, strictly parsed."""
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    body = response.content.decode()
    assert body == "" or body.endswith("\n\n")
    events = []
    for block in body.split("\n\n")[:-1]:
        assert block.startswith("data: "), f"not a data event: {block!r}"
        events.append(json.loads(block[len("data: ") :]))
    return events


def error_of(response: requests.Response, status: int) -> str:
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


# -- generate --------------------------------------------------------------------------------------


def test_generate_maps_inputs_and_outputs_by_name(url):
    reply = generate(url, "add_sub", {"INPUT0": [1, 2, 3, 4], "INPUT1": [0.5, 0.5, 0.5, 0.5], "id": "g-1"})
    assert reply.status_code == 200
    assert reply.json() == {
        "model_name": "add_sub",
        "model_version": "1",
        "id": "g-1",
        "OUTPUT0": [1.5, 2.5, 3.5, 4.5],
        "OUTPUT1": [0.5, 1.5, 2.5, 3.5],
    }


def test_generate_with_text_scalars_and_lists(url):
    assert generate(url, "string_ops", {"TEXT": "h\u00e9llo"}).json() == {
        "model_name": "string_ops",
        "model_version": "1",
        "UPPER": "H\u00c9LLO",
        "LENGTH": 6,
    }
    listed = generate(url, "string_ops", {"TEXT": ["a", "", "\u65e5"]}).json()
    assert (listed["UPPER"], listed["LENGTH"]) == (["A", "", "\u65e5"], [1, 0, 3])


def test_generate_on_a_batched_model_sends_one_row(url):
    assert generate(url, "batched_scale", {"X": [1, 2.5, -3]}).json() == {
        "model_name": "batched_scale",
        "model_version": "1",
        "Y": [2.0, 5.0, -6.0],
    }


def test_other_keys_become_parameters_and_response_parameters_become_keys(url):
    reply = generate(
        url,
        "echo_request",
        {"INPUT": 5, "temperature": 0.5, "stream": False, "parameters": {"max_tokens": 3}, "id": "p"},
    )
    body = reply.json()
    assert json.loads(body["PARAMETERS"]) == {"temperature": 0.5, "stream": False, "max_tokens": 3}
    assert (body["OUTPUT"], body["REQUEST_ID"], body["id"], body["model_says"]) == (5, "p", "p", "hello")


def test_generate_on_a_versioned_route(url):
    body = {"INPUT0": [1, 1, 1, 1], "INPUT1": [1, 1, 1, 1]}
    assert generate(url, "add_sub/versions/1", body).json()["OUTPUT0"] == [2.0] * 4
    assert "version 2 is not found" in error_of(generate(url, "add_sub/versions/2", body), 404)


def test_generate_on_a_decoupled_model_with_exactly_one_response(url):
    assert generate(url, "repeat_int32", {"IN": [7]}).json() == {
        "model_name": "repeat_int32",
        "model_version": "1",
        "OUT": 7,
        "IDX": 0,
    }


TRITON_COUNT_MESSAGE = (  # Triton's http_server.cc answers this, with status 200 (its reply had started)
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)


@pytest.mark.parametrize("values, count", [([1, 2, 3], 3), ([], 0)])
def test_generate_on_a_model_producing_other_than_one_response_answers_as_triton(url, values, count):
    reply = generate(url, "repeat_int32", {"IN": values})
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"error": f"{TRITON_COUNT_MESSAGE}; model 'repeat_int32' sent {count}"}


def test_generate_reports_the_models_error(url):
    assert "raise_after gives up" in error_of(generate(url, "raise_after", {"COUNT": 0}), 400)
    reply = generate(url, "error_response", {"COUNT": 0})  # three responses, the second an error
    assert (reply.status_code, reply.json()["error"]) == (200, f"{TRITON_COUNT_MESSAGE}; model 'error_response' sent 3")


def test_generate_of_bytes_that_are_not_utf8(url):
    assert generate(url, "bytes_out", {"X": 0}).json()["Y"] == ["ok", "\u00e9"]
    message = error_of(generate(url, "bytes_out", {"X": 1}), 400)
    assert "output 'Y' of model 'bytes_out' holds bytes that are not UTF-8" in message


# -- generate_stream -------------------------------------------------------------------------------


def test_generate_stream_sends_one_event_per_response_in_order(url):
    events = sse_events(generate(url, "repeat_int32", {"IN": [5, 6, 7], "id": "s"}, "generate_stream"))
    assert events == [
        {"model_name": "repeat_int32", "model_version": "1", "id": "s", "OUT": value, "IDX": index}
        for index, value in enumerate([5, 6, 7])
    ]


def test_generate_stream_of_zero_responses_is_an_empty_stream(url):
    assert sse_events(generate(url, "repeat_int32", {"IN": []}, "generate_stream")) == []


def test_generate_stream_of_a_non_decoupled_model_is_one_event(url):
    events = sse_events(generate(url, "add_sub", {"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]}, "generate_stream"))
    assert events == [
        {
            "model_name": "add_sub",
            "model_version": "1",
            "OUTPUT0": [2.0, 3.0, 4.0, 5.0],
            "OUTPUT1": [0.0, 1.0, 2.0, 3.0],
        }
    ]


def test_generate_stream_from_a_thread_after_execute_returned(url):
    events = sse_events(generate(url, "thread_sender", {"COUNT": 4}, "generate_stream"))
    assert [(e["OUT"], e["AFTER_EXECUTE"]) for e in events] == [(i, True) for i in range(4)]


def test_generate_stream_errors_after_the_start_are_events(url):
    raised = sse_events(generate(url, "raise_after", {"COUNT": 2}, "generate_stream"))
    assert [e.get("OUT") for e in raised[:2]] == [0, 1]
    assert set(raised[2]) == {"error"} and "ValueError: raise_after gives up" in raised[2]["error"]
    assert len(raised) == 3
    middle = sse_events(generate(url, "error_response", {"COUNT": 0}, "generate_stream"))
    assert [e.get("OUT", e.get("error")) for e in middle] == [0, "error_response says no", 1]
    not_utf8 = sse_events(generate(url, "bytes_out", {"X": 1}, "generate_stream"))
    assert len(not_utf8) == 1 and "not UTF-8" in not_utf8[0]["error"]


def test_generate_stream_failing_before_its_first_response_is_a_plain_error(url):
    assert "raise_after gives up" in error_of(generate(url, "raise_after", {"COUNT": 0}, "generate_stream"), 400)


@pytest.mark.parametrize(
    "model, body, status, fragment",
    [
        (
            "add_sub",
            {"INPUT0": [1, 2, 3], "INPUT1": [1, 1, 1, 1]},
            400,
            "cannot shape 3 values of input 'INPUT0' as [4]",
        ),
        ("add_sub", {"INPUT0": ["a", 2, 3, 4], "INPUT1": [1, 1, 1, 1]}, 400, "must hold numbers for FP32"),
        ("add_sub", {"INPUT0": [1, 2, 3, 4]}, 400, "expects input(s) 'INPUT1'"),
        (
            "add_sub",
            {"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1], "junk": [1]},
            400,
            "'junk' is neither a model input",
        ),
        ("add_sub", {"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1], "id": 3}, 400, "'id' must be a string"),
        (
            "add_sub",
            {"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1], "parameters": [1]},
            400,
            "'parameters' must be a JSON object",
        ),
        ("add_sub", "[1", 400, "not valid JSON"),
        ("add_sub", "[1, 2]", 400, "must be a JSON object"),
        ("repeat_int32", {"IN": [1.5]}, 400, "INT32"),
        ("no_such_model", {}, 404, "unknown model: 'no_such_model'"),
    ],
)
@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_bad_requests_are_refused_before_anything_streams(url, route, model, body, status, fragment):
    assert fragment in error_of(generate(url, model, body, route), status)
    assert generate(url, "repeat_int32", {"IN": [1]}).status_code == 200


# -- concurrency and disconnects (aiohttp) ---------------------------------------------------------


async def read_events(session: aiohttp.ClientSession, url: str, model: str, body: dict) -> list[dict]:
    async with session.post(f"{url}/{model}/generate_stream", json=body) as reply:
        assert reply.status == 200
        text = await reply.text()
    return [json.loads(block[len("data: ") :]) for block in text.split("\n\n")[:-1]]


async def test_concurrent_generate_streams_keep_their_own_events(url):
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        bodies = [{"COUNT": 5 + n, "delay_ms": 2, "id": f"c{n}"} for n in range(6)]
        outcomes = await asyncio.gather(*(read_events(session, url, "counter", body) for body in bodies))
    for n, events in enumerate(outcomes):
        assert [(e["id"], e["OUT"]) for e in events] == [(f"c{n}", i) for i in range(5 + n)]


async def test_a_client_leaving_a_generate_stream_cancels_the_model(url, tmp_path):
    record = tmp_path / "cancelled.json"
    body = {"COUNT": 500, "delay_ms": 10, "record_path": str(record)}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{url}/counter/generate_stream", json=body) as reply:
            assert reply.status == 200
            first = await reply.content.readuntil(b"\n\n")
            assert json.loads(first[len(b"data: ") :])["OUT"] == 0
            reply.close()  # drops the connection mid-stream
    seen = await asyncio.to_thread(wait_for_file, record)
    assert seen["cancelled"] is True and 1 <= seen["sent"] < 500
    events = sse_events(generate(url, "counter", {"COUNT": 3}, "generate_stream"))
    assert [e["OUT"] for e in events] == [0, 1, 2]


# -- how events reach the socket: written through while the client keeps up, awaited when it falls behind --


def _raw_generate_stream(url: str, body: dict, http_version: str, receive_buffer: int) -> tuple[bytes, bytes]:
    """POST on a raw socket whose receive buffer is `receive_buffer` bytes, read nothing until the server has
    had time to fill it, then read to the end; returns (head, body) as sent."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    payload = json.dumps(body).encode()
    with socket.socket() as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        connection.settimeout(TIMEOUT_S)
        connection.connect((host, int(port)))
        head = (
            f"POST /v2/models/big_events/generate_stream HTTP/{http_version}\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        connection.sendall(head.encode() + payload)
        time.sleep(0.5)  # not a timing assertion: lets the server's writes back up behind the full buffer
        received = bytearray()
        while chunk := connection.recv(65536):
            received += chunk
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    return head, rest


def _unchunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body; fails on a malformed frame or a missing last chunk."""
    payload = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return bytes(payload)
        payload += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def _events(payload: bytes) -> list[dict]:
    blocks = payload.decode().split("\n\n")
    assert blocks[-1] == ""
    return [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]]


@pytest.mark.parametrize("http_version", ["1.1", "1.0"])
def test_a_client_that_falls_behind_gets_every_event_in_order(url, http_version):
    # 8 MB of events against a 4 KiB receive buffer: past the kernel's send buffer (at most 4 MiB by default)
    # the server's own buffer passes its high-water mark, so events are written both through (while it has
    # room) and by the handler (once it must wait for the client)
    count, size = 500, 16 * 1024
    head, body = _raw_generate_stream(url, {"COUNT": count, "SIZE": size}, http_version, receive_buffer=4096)
    assert head.startswith(f"HTTP/{http_version} 200".encode())
    chunked = b"transfer-encoding: chunked" in head.lower()
    assert chunked == (http_version == "1.1")
    events = _events(_unchunk(body) if chunked else body)
    assert [e["OUT"] for e in events] == list(range(count))
    assert all(e["TEXT"] == "x" * size for e in events)
