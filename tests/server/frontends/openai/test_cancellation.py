"""A client that leaves an OpenAI stream frees the engine: read from the LLM metrics."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.backends.llm.serving.helpers import (
    GREEDY,
    LONG,
    MODEL,
    metric_delta,
    server_metrics,
    wait_server_idle,
)


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_a_client_leaving_an_openai_stream_frees_the_engine(server, oai, route):
    before = wait_server_idle(server)
    arguments = dict(model=MODEL, max_tokens=LONG // 2, n=2, stream=True, **GREEDY)
    if route == "chat":
        chunks = oai.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **arguments)
    else:
        chunks = oai.completions.create(prompt="hello", **arguments)
    with chunks:
        next(iter(chunks))
    after = wait_server_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG  # 2 choices of LONG // 2
    assert metric_delta(before, after, "modelgate_llm_e2e_request_latency_seconds_count") == 2
    assert oai.completions.create(model=MODEL, prompt="hello", max_tokens=3, **GREEDY).usage.completion_tokens == 3


def test_a_client_leaving_a_non_streaming_request_frees_the_engine(server):
    """Nothing is streamed back, so only the closed connection says the client left: every prompt's choice stops."""
    before = wait_server_idle(server)
    prompts = 4
    body = json.dumps(
        {"model": MODEL, "prompt": ["hello"] * prompts, "max_tokens": LONG, "temperature": 0, "ignore_eos": True}
    ).encode()
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        while metric_delta(before, server_metrics(server), "modelgate_llm_generation_tokens_total") == 0:
            assert time.monotonic() < deadline, "the request never started generating"
            time.sleep(0.005)
        # generating: now the client goes
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") < prompts * LONG
    assert metric_delta(before, after, "modelgate_llm_e2e_request_latency_seconds_count") <= prompts
