"""Bad requests to the OpenAI routes get 400 error objects (404 for unknown models) and never reach the engine."""

from __future__ import annotations

import openai
import pytest
import requests

from tests.backends.llm.serving.helpers import (
    GREEDY,
    MAX_MODEL_LEN,
    MODEL,
    TOO_LONG,
    WAIT_S,
    metric_delta,
    wait_server_idle,
)

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


BAD_CHAT = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi", "bogus": 1}]}, "bogus"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": TOO_LONG}]}, "context"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "image_url"),
    ({"top_logprobs": 99}, "top_logprobs"),
    ({"frequency_penalty": 5}, "frequency_penalty"),
    ({"stream_options": {"include_usage": True, "extra": 1}}, "extra"),
]


@pytest.mark.parametrize("fields, fragment", BAD_CHAT)
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
    for fields, _ in BAD_OPENAI.values():
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **fields}
        assert requests.post(f"http://{server.http_url}/v1/completions", json=body, timeout=WAIT_S).status_code == 400
    for fields, _ in BAD_CHAT:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
        response = requests.post(f"http://{server.http_url}/v1/chat/completions", json=body, timeout=WAIT_S)
        assert response.status_code == 400
    good = oai.completions.create(model=MODEL, prompt="hello", max_tokens=4, **GREEDY)
    after = wait_server_idle(server)
    assert metric_delta(before, after, "modelgate_llm_prefix_cache_queries") == good.usage.prompt_tokens
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") == 4
    assert metric_delta(before, after, "modelgate_llm_time_to_first_token_seconds_count") == 1
