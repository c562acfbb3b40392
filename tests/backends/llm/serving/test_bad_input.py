"""Bad LLM requests get 400 on the KServe routes (HTTP generate, gRPC streams) and never reach the engine.

The OpenAI routes' bad requests: tests/server/frontends/openai/test_bad_requests.py."""

from __future__ import annotations

import json

import pytest
import requests

from tests.backends.llm.serving.helpers import (
    MAX_MODEL_LEN,
    MODEL,
    TOO_LONG,
    WAIT_S,
    GrpcStream,
    generate,
    greedy_sampling,
    int_output,
    metric_delta,
    model_url,
    wait_server_idle,
)

BAD_REQUESTS = {
    "prompt past the context": ({"text_input": TOO_LONG}, "context"),
    "max_tokens past the context": ({"sampling_parameters": greedy_sampling(MAX_MODEL_LEN)}, "max_tokens"),
    "negative temperature": ({"sampling_parameters": json.dumps({"temperature": -1})}, "temperature"),
    "non-numeric top_p": ({"sampling_parameters": json.dumps({"top_p": "x"})}, "top_p"),
    "malformed JSON": ({"sampling_parameters": '{"max_tokens": 4,'}, "JSON"),
    "unknown sampling field": ({"sampling_parameters": json.dumps({"max_tokens": 4, "bogus": 1})}, "bogus"),
    "sampling_parameters not an object": ({"sampling_parameters": "[1, 2]"}, "object"),
    "empty prompt": ({"text_input": ""}, "empty"),
}


def _bad_body(case: str) -> tuple[dict, str]:
    fields, fragment = BAD_REQUESTS[case]
    return {"text_input": "hello", "sampling_parameters": greedy_sampling(4), **fields}, fragment


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_generate_requests_get_400_json(server, route, case):
    body, fragment = _bad_body(case)
    response = requests.post(
        model_url(server, route), json={**body, "stream": route == "generate_stream"}, timeout=WAIT_S
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert fragment in response.json()["error"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("temperature", -1),
        ("top_p", "x"),
        ("max_tokens", MAX_MODEL_LEN),
        ("max_tokens", 0),
        ("seed", -3),
    ],
)
def test_bad_generate_request_parameters_get_400(server, name, value):
    response = requests.post(model_url(server, "generate"), json={"text_input": "hello", name: value}, timeout=WAIT_S)
    assert response.status_code == 400
    assert name in response.json()["error"]


def test_bad_requests_on_a_grpc_stream_get_error_messages_and_the_stream_goes_on(server):
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        for index, case in enumerate(BAD_REQUESTS):
            body, fragment = _bad_body(case)
            stream.send(f"bad{index}", body["text_input"], body["sampling_parameters"])
            result, error = stream.next()
            assert result is None and fragment in str(error), case
        stream.send("good", "hello", greedy_sampling(4))
        assert int_output(stream.collect({"good"})["good"][-1], "num_output_tokens") == 4
    finally:
        stream.close()


def test_rejected_requests_never_reach_the_engine(server):
    """A run of bad requests leaves the engine's counters as one good request alone moves them."""
    before = wait_server_idle(server)
    for case in BAD_REQUESTS:
        assert requests.post(model_url(server, "generate"), json=_bad_body(case)[0], timeout=WAIT_S).status_code == 400
    good = generate(server, "hello", 4).json()
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_prefix_cache_queries") == good["num_input_tokens"]
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") == 4
    assert metric_delta(before, after, "modelgate_llm_time_to_first_token_seconds_count") == 1
