"""Prompts given as token ids: OpenAI's `prompt: [ids]` / `[[ids], ...]` on /v1/completions, and the LLM backend's
`input_ids` input on Triton's generate routes, answer as their text would, and bad ids get a 400 naming them."""

from __future__ import annotations

import json

import pytest
import requests

from tests.backends.llm.serving.helpers import (
    GREEDY,
    MAX_MODEL_LEN,
    MODEL,
    PROMPTS,
    WAIT_S,
    generate_stream,
    greedy_sampling,
    metric_delta,
    model_url,
    wait_server_idle,
)


def test_a_completion_of_token_ids_is_the_completion_of_their_text(oai, reference):
    ids = reference.prompt_ids(PROMPTS[1])
    expected = reference.greedy(ids, 8)
    completion = oai.completions.create(model=MODEL, prompt=ids, max_tokens=8, **GREEDY)
    assert completion.choices[0].text == expected.text
    assert completion.usage.prompt_tokens == len(ids)


def test_several_prompts_of_token_ids_and_a_stream_of_them(oai, reference):
    prompts = [reference.prompt_ids(text) for text in PROMPTS[:2]]
    expected = [reference.greedy(ids, 6).text for ids in prompts]
    both = oai.completions.create(model=MODEL, prompt=prompts, max_tokens=6, **GREEDY)
    assert [choice.text for choice in both.choices] == expected
    assert both.usage.prompt_tokens == sum(map(len, prompts))
    chunks = oai.completions.create(model=MODEL, prompt=prompts[0], max_tokens=6, stream=True, **GREEDY)
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == expected[0]


BAD_TOKEN_PROMPTS = {
    "a negative id": ({"prompt": [5, -1]}, "greater than or equal to 0"),
    "an id past INT32": ({"prompt": [2**31]}, "less than or equal to"),
    "booleans": ({"prompt": [True, False]}, "prompt"),
    "an empty list of ids": ({"prompt": [[1, 2], []]}, "non-empty"),
    "an id past the vocabulary": ({"prompt": [5, 10**6]}, "1000000"),
    "ids past the context": ({"prompt": [5] * MAX_MODEL_LEN}, "context"),
    "echo": ({"prompt": [5, 6], "echo": True}, "echo"),
}


@pytest.mark.parametrize("case", list(BAD_TOKEN_PROMPTS))
def test_bad_token_id_prompts_get_400_and_never_reach_the_engine(server, case):
    fields, fragment = BAD_TOKEN_PROMPTS[case]
    before = wait_server_idle(server)
    body = {"model": MODEL, "max_tokens": 4, **fields}
    response = requests.post(f"http://{server.http_url}/v1/completions", json=body, timeout=WAIT_S)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]
    assert metric_delta(before, wait_server_idle(server), "modelgate_llm_prompt_tokens_total") == 0


@pytest.mark.parametrize("exclude_input", [True, False])
def test_generate_takes_input_ids_as_the_tensorrtllm_backend_names_them(server, reference, exclude_input):
    """The whole response repeats the prompt as the ids' text unless asked not to."""
    ids = reference.prompt_ids(PROMPTS[2])
    expected = reference.greedy(ids, 7)
    body = {"input_ids": ids, "sampling_parameters": greedy_sampling(7), "exclude_input_in_output": exclude_input}
    response = requests.post(model_url(server, "generate"), json=body, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    prompt_text = reference.tokenizer.decode(ids, skip_special_tokens=False)
    assert response.json()["text_output"] == (expected.text if exclude_input else prompt_text + expected.text)
    assert response.json()["num_input_tokens"] == len(ids)
    _, events = generate_stream(server, {**body, "stream": True})
    assert "".join(event["text_output"] for event in events) == expected.text


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"input_ids": [5, 6], "text_input": "hello"}, "one way only"),
        ({"input_ids": []}, "input_ids"),
        ({"input_ids": [5, 10**6]}, "[0, "),
    ],
)
def test_bad_input_ids_get_400_naming_them(server, fields, fragment):
    body = {"sampling_parameters": greedy_sampling(4), **fields}
    response = requests.post(model_url(server, "generate"), json=body, timeout=WAIT_S)
    assert response.status_code == 400, response.text
    assert fragment in json.loads(response.text)["error"]
