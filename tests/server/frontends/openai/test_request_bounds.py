"""Bounds on what one OpenAI or generate request may ask for, through the openai SDK where it sends the request
and raw HTTP where it would not: JSON nesting, list lengths, best_of, min_tokens, prompt length. Each bad
request gets 400 naming the field and what is allowed, and the server goes on serving add_sub and the LLM.

These run on the example server (tiny_llm: a 256-token context) so that add_sub is served beside the LLM.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests

from modelgate.backends.llm.generation_request import MAX_PROMPT_CHARS_PER_TOKEN
from modelgate.backends.llm.sampling_params import MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS, MAX_STOP_TOKEN_IDS
from modelgate.core.bounded_json import MAX_JSON_DEPTH
from modelgate.server.frontends.openai.schemas import MAX_CHOICES, MAX_N, MAX_PROMPTS
from tests.server.frontends.http.probe_models import good_add_sub

MODEL = "tiny_llm"
MAX_MODEL_LEN = 256
WAIT_S = 60
HUGE_PROMPT = "a" * 10_000_000


@pytest.fixture(scope="module")
def sdk(example_server):
    client = openai.OpenAI(
        base_url=f"http://{example_server.http_url}/v1", api_key="unused", max_retries=0, timeout=WAIT_S
    )
    yield client
    client.close()


@pytest.fixture
def assert_serving(client, sdk):
    """After a bad request: add_sub answers, and so does the LLM."""

    def check() -> None:
        good_add_sub(client)
        completion = sdk.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=2)
        assert completion.usage.completion_tokens >= 1

    return check


def _post(example_server, route: str, body: str | dict) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    return requests.post(f"http://{example_server.http_url}{route}", data=data, headers=headers, timeout=WAIT_S)


def _openai_400(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error["message"]


# -- JSON nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_deep_json_on_the_openai_routes_is_400(example_server, assert_serving, route, depth):
    body = '{"model": "tiny_llm", "prompt": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    assert f"more than {MAX_JSON_DEPTH} levels deep" in _openai_400(_post(example_server, route, body))
    assert_serving()


def test_deep_json_inside_an_llm_input_is_400(example_server, assert_serving):
    """`sampling_parameters` is JSON text inside the request: the LLM backend bounds its nesting too."""
    deep = '{"stop": ' + "[" * 500 + "]" * 500 + "}"
    response = _post(example_server, f"/v2/models/{MODEL}/generate", {"text_input": "hi", "sampling_parameters": deep})
    assert response.status_code == 400
    assert (
        f"input 'sampling_parameters' nests JSON arrays/objects more than {MAX_JSON_DEPTH}" in response.json()["error"]
    )
    assert_serving()


# -- lists and counts, through the openai SDK ----------------------------------------------------

SDK_CASES = {
    "10^5 stop strings": (
        {"stop": ["x"] * 100_000},
        f"stop: at most {MAX_STOP_STRINGS} stop strings are allowed, got 100000",
    ),
    "a stop string too long": (
        {"stop": ["x" * (MAX_STOP_STRING_CHARS + 1)]},
        f"stop: each stop string must be 1 to {MAX_STOP_STRING_CHARS} characters",
    ),
    "best_of 10^6": ({"best_of": 10**6}, "best_of: must equal n (1), got 1000000"),
    "n past the bound": ({"n": MAX_N + 1}, f"n: Input should be less than or equal to {MAX_N}"),
    "too many prompts": (
        {"prompt": ["hi"] * (MAX_PROMPTS + 1)},
        f"at most {MAX_PROMPTS} prompts per request are allowed, got {MAX_PROMPTS + 1}",
    ),
    "too many choices": (
        {"prompt": ["hi"] * (MAX_CHOICES // 2 + 1), "n": 2},
        f"at most {MAX_CHOICES} choices per request are allowed",
    ),
    "logit_bias": ({"logit_bias": {"5": 10}}, "logit_bias is not supported"),
    "min_tokens over max_tokens": (
        {"max_tokens": 4, "extra_body": {"min_tokens": 8}},
        "min_tokens: must be <= max_tokens (4), got 8",
    ),
    "too many stop_token_ids": (
        {"extra_body": {"stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)}},
        f"stop_token_ids: at most {MAX_STOP_TOKEN_IDS} token ids are allowed",
    ),
}


@pytest.mark.parametrize("case", list(SDK_CASES))
def test_unbounded_completion_fields_are_400(sdk, assert_serving, case):
    fields, message = SDK_CASES[case]
    arguments = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(**arguments)
    assert message in caught.value.body["message"]
    assert_serving()


def test_min_tokens_over_max_tokens_in_chat_is_400(sdk, assert_serving):
    with pytest.raises(openai.BadRequestError, match=r"min_tokens: must be <= max_tokens \(2\), got 3"):
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_body={"min_tokens": 3}
        )
    assert_serving()


def test_stop_bounds_hold_on_the_generate_route(example_server, assert_serving):
    sampling = json.dumps({"stop": ["x"] * (MAX_STOP_STRINGS + 1), "max_tokens": 2})
    response = _post(
        example_server, f"/v2/models/{MODEL}/generate", {"text_input": "hi", "sampling_parameters": sampling}
    )
    assert response.status_code == 400
    assert f"stop: at most {MAX_STOP_STRINGS} stop strings" in response.json()["error"]
    assert_serving()


def test_choices_at_the_bounds_are_served(sdk, assert_serving):
    completion = sdk.completions.create(model=MODEL, prompt="hi", max_tokens=1, n=2, best_of=2, stop=["x"] * 4)
    assert len(completion.choices) == 2
    assert_serving()


# -- prompt length before tokenizing -------------------------------------------------------------

MAX_CHARS = MAX_MODEL_LEN * MAX_PROMPT_CHARS_PER_TOKEN


def test_a_10_mb_prompt_is_refused_before_tokenizing(sdk, assert_serving):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model=MODEL, prompt=HUGE_PROMPT, max_tokens=2)
    message = caught.value.body["message"]
    assert f"has {len(HUGE_PROMPT)} characters" in message and f"at most {MAX_CHARS}" in message
    assert "refused before tokenizing" in message
    assert_serving()


def test_a_10_mb_chat_message_is_refused_before_templating(sdk, assert_serving):
    with pytest.raises(openai.BadRequestError, match="refused before tokenizing"):
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": HUGE_PROMPT}], max_tokens=2)
    assert_serving()


def test_more_messages_than_the_context_has_tokens_is_400(sdk, assert_serving):
    messages = [{"role": "user", "content": ""}] * (MAX_MODEL_LEN + 1)
    with pytest.raises(openai.BadRequestError, match=f"holds {MAX_MODEL_LEN + 1} messages"):
        sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert_serving()


def test_a_10_mb_generate_prompt_is_refused_before_tokenizing(example_server, assert_serving):
    response = _post(example_server, f"/v2/models/{MODEL}/generate", {"text_input": HUGE_PROMPT})
    assert response.status_code == 400
    assert "('text_input') has 10000000 characters" in response.json()["error"]
    assert_serving()


def test_a_prompt_under_the_character_bound_is_still_checked_in_tokens(sdk, assert_serving):
    """Characters below the bound: tokenized, and refused by its token count as before."""
    prompt = "the quick brown fox " * (MAX_CHARS // 20)
    assert len(prompt) <= MAX_CHARS
    with pytest.raises(openai.BadRequestError, match="this model's context is 256 tokens"):
        sdk.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert_serving()
