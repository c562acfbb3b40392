"""Bad LLM requests get 400 (404 for unknown models) on every API and never reach the engine."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from tests.backends.llm.serving_helpers import (
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


BAD_OPENAI = {
    "prompt past the context": ({"prompt": TOO_LONG}, "context"),
    "max_tokens past the context": ({"max_tokens": MAX_MODEL_LEN}, "max_tokens"),
    "negative temperature": ({"temperature": -1}, "temperature"),
    "non-numeric top_p": ({"top_p": "x"}, "top_p"),
    "unknown field": ({"bogus": 1}, "bogus"),
    "empty prompt": ({"prompt": ""}, "prompt"),
    "no prompt": ({"prompt": None}, "prompt"),
    "n of zero": ({"n": 0}, "n:"),
}


@pytest.mark.parametrize("case", list(BAD_OPENAI))
def test_bad_openai_completions_get_400_error_objects(server, oai, case):
    fields, fragment = BAD_OPENAI[case]
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **fields}
    raw = requests.post(f"http://{server.http_url}/v1/completions", json=body, timeout=WAIT_S)
    assert raw.status_code == 400
    assert fragment in raw.json()["error"]["message"]
    extra = {"bogus": body.pop("bogus")} if "bogus" in body else None  # the SDK sends unknown fields this way
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(**body, extra_body=extra)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi", "bogus": 1}]}, "bogus"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": TOO_LONG}]}, "context"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "image_url"),
        ({"top_logprobs": 99}, "top_logprobs"),
        ({"frequency_penalty": 5}, "frequency_penalty"),
        ({"stream_options": {"include_usage": True, "extra": 1}}, "extra"),
    ],
)
def test_bad_openai_chat_requests_get_400_error_objects(server, fields, fragment):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
    response = requests.post(f"http://{server.http_url}/v1/chat/completions", json=body, timeout=WAIT_S)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_unknown_openai_model_is_404(oai):
    with pytest.raises(openai.NotFoundError, match="nope"):
        oai.completions.create(model="nope", prompt="hello", max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="nope"):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_rejected_requests_never_reach_the_engine(server, oai):
    """A run of bad requests leaves the engine's counters as one good request alone moves them."""
    before = wait_server_idle(server)
    for case in BAD_REQUESTS:
        assert requests.post(model_url(server, "generate"), json=_bad_body(case)[0], timeout=WAIT_S).status_code == 400
    for fields, _ in BAD_OPENAI.values():
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **fields}
        assert requests.post(f"http://{server.http_url}/v1/completions", json=body, timeout=WAIT_S).status_code == 400
    good = generate(server, "hello", 4).json()
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_prefix_cache_queries") == good["num_input_tokens"]
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") == 4
    assert metric_delta(before, after, "modelgate_llm_time_to_first_token_seconds_count") == 1
