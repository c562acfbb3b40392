"""/v1/completions with several prompts starts them one after another: whatever ends the starting (a later
prompt refused, the client gone) cancels the choices of the prompts already started, which nobody would read
and which would otherwise each run to their last token. Read from the LLM metrics."""

from __future__ import annotations

import json
import socket
import time

import openai
import pytest

from tests.backends.llm.serving.helpers import (
    GREEDY,
    LONG,
    MODEL,
    TOO_LONG,
    metric_delta,
    server_metrics,
    wait_server_idle,
)

TOKENS = "modelgate_llm_generation_tokens_total"


def test_a_refused_prompt_cancels_the_prompts_started_before_it(server, oai):
    before = wait_server_idle(server)
    with pytest.raises(openai.BadRequestError, match="context"):
        oai.completions.create(model=MODEL, prompt=["hello", "the lazy dog", TOO_LONG], max_tokens=LONG, **GREEDY)
    after = wait_server_idle(server)
    assert metric_delta(before, after, TOKENS) < LONG  # neither started prompt ran to its end


def test_a_client_leaving_while_prompts_start_cancels_those_started(server):
    before = wait_server_idle(server)
    num_prompts = 16
    body = json.dumps(
        {"model": MODEL, "prompt": ["hello"] * num_prompts, "max_tokens": LONG, "temperature": 0, "ignore_eos": True}
    ).encode()
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        while metric_delta(before, server_metrics(server), TOKENS) < 2:  # two prompts started at least
            assert time.monotonic() < deadline, "the request never started generating"
            time.sleep(0.005)
    after = wait_server_idle(server)
    assert metric_delta(before, after, TOKENS) < LONG  # no started prompt ran to its end
