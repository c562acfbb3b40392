"""A client that leaves an OpenAI stream frees the engine: read from the LLM metrics."""

from __future__ import annotations

import pytest

from tests.backends.llm.serving.helpers import (
    GREEDY,
    LONG,
    MODEL,
    completions_until_generating,
    metric_delta,
    wait_server_idle,
)


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_a_client_leaving_an_openai_stream_frees_the_engine(server, oai, route):
    before = wait_server_idle(server)
    # As long as the context and the KV cache allow (chat's prompt is 19 tokens; 2 x 119 of the 256 cached):
    # the longer the choices run, the surer the client's leave reaches the engine before they end on their own
    # (at LONG // 2 each, a loaded CI machine once saw both finish first).
    max_tokens = 100
    arguments = dict(model=MODEL, max_tokens=max_tokens, n=2, stream=True, **GREEDY)
    if route == "chat":
        chunks = oai.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **arguments)
    else:
        chunks = oai.completions.create(prompt="hello", **arguments)
    with chunks:
        next(iter(chunks))
    after = wait_server_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < 2 * max_tokens
    assert metric_delta(before, after, "modelgate_llm_e2e_request_latency_seconds_count") == 2
    assert oai.completions.create(model=MODEL, prompt="hello", max_tokens=3, **GREEDY).usage.completion_tokens == 3


def test_a_client_leaving_a_non_streaming_request_frees_the_engine(server):
    """Nothing is streamed back, so only the closed connection says the client left: every prompt's choice stops."""
    before = wait_server_idle(server)
    prompts = 4
    completions_until_generating(server, prompts, at_least=1, before=before)  # generating: now the client goes
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") < prompts * LONG
    assert metric_delta(before, after, "modelgate_llm_e2e_request_latency_seconds_count") <= prompts
