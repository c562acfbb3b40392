"""A client that leaves, or a request cancelled early, frees the engine: read from the LLM metrics."""

from __future__ import annotations

import http.client
import json
import socket
import time

import numpy as np

from modelgate.core.inference_types import InferRequest, InferTensor
from tests.backends.llm.serving.helpers import (
    LONG,
    MODEL,
    WAIT_S,
    GrpcStream,
    generate,
    greedy_sampling,
    int_output,
    is_final,
    metric_delta,
    server_metrics,
    wait_server_idle,
)


def test_a_client_leaving_generate_stream_frees_the_engine(server, reference):
    before = wait_server_idle(server)
    body = {"text_input": "hello", "sampling_parameters": greedy_sampling(LONG), "stream": True}
    connection = http.client.HTTPConnection(*server.http_url.split(":"), timeout=WAIT_S)
    connection.request(
        "POST", f"/v2/models/{MODEL}/generate_stream", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    after = wait_server_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG
    assert metric_delta(before, after, "modelgate_llm_prompt_tokens_total") == len(reference.prompt_ids("hello"))
    assert generate(server, "hello", 4).json()["num_output_tokens"] == 4


def test_a_cancelled_grpc_stream_frees_the_engine(server):
    before = wait_server_idle(server)
    stream = GrpcStream(server.grpc_url, MODEL)
    stream.send("long", "hello", greedy_sampling(LONG))
    result, error = stream.next()
    assert error is None and not is_final(result)
    stream.close(cancel=True)
    after = wait_server_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG
    again = GrpcStream(server.grpc_url, MODEL)
    try:
        again.send("next", "hello", greedy_sampling(4))
        assert int_output(again.collect({"next"})["next"][-1], "num_output_tokens") == 4
    finally:
        again.close()


def test_a_request_cancelled_before_it_reaches_the_engine_does_not_run(server):
    """A client gone right after sending: its stream is cancelled before the backend's execute runs."""
    before = wait_server_idle(server)
    tensors = {
        name: InferTensor(name, "BYTES", (1,), np.array([value.encode()], dtype=object))
        for name, value in (("text_input", "hello"), ("sampling_parameters", greedy_sampling(LONG)))
    }
    tensors["stream"] = InferTensor("stream", "BOOL", (1,), np.array([True]))

    async def send_and_leave():
        stream = await server.server.dataplane.infer_stream(InferRequest(MODEL, inputs=tensors))
        stream.cancel()

    server.run(send_and_leave())
    deadline = time.monotonic() + WAIT_S
    # the aborted request is counted once the engine reports it finished
    while not metric_delta(before, server_metrics(server), "modelgate_llm_prompt_tokens_total"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_prompt_tokens_total") > 0
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG
