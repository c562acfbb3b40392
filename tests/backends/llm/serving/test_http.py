"""LLM serving over HTTP: generate, generate_stream and KServe v2 infer (tritonclient.http), checked
against the engine alone (the server and the reference engine: conftest.py)."""

from __future__ import annotations

import itertools
import json

import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.backends.llm.serving.helpers import (
    MODEL,
    PROMPTS,
    WAIT_S,
    chat_prompt_ids,
    generate,
    generate_stream,
    greedy_sampling,
    int_output,
    llm_inputs,
    model_url,
    stop_string,
    string_output,
    text_output,
)

# -- generate and generate_stream ---------------------------------------------------------------


@pytest.mark.parametrize("exclude_input", [True, False])
def test_generate_greedy_equals_the_engine_alone(server, reference, exclude_input):
    prompt = PROMPTS[0]
    expected = reference.greedy(reference.prompt_ids(prompt), 12)
    response = generate(server, prompt, 12, exclude_input_in_output=exclude_input)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text_output"] == (expected.text if exclude_input else prompt + expected.text)
    assert body["finish_reason"] == "length"
    assert body["num_input_tokens"] == len(reference.prompt_ids(prompt))
    assert body["num_output_tokens"] == 12
    assert (body["model_name"], body["model_version"]) == (MODEL, "1")


def test_generate_stream_chunks_join_to_the_whole_text(server, reference):
    prompt = PROMPTS[1]
    expected = reference.greedy(reference.prompt_ids(prompt), 10)
    whole = generate(server, prompt, 10, exclude_input_in_output=True).json()
    response, events = generate_stream(
        server, {"text_input": prompt, "sampling_parameters": greedy_sampling(10), "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert len(events) > 1
    assert "".join(event["text_output"] for event in events) == whole["text_output"] == expected.text
    assert [event["finish_reason"] for event in events] == [""] * (len(events) - 1) + ["length"]
    counts = [event["num_output_tokens"] for event in events]
    assert counts == sorted(counts) and counts[-1] == 10
    assert {event["num_input_tokens"] for event in events} == {len(reference.prompt_ids(prompt))}


@pytest.mark.parametrize("override", [{"max_tokens": 5}, {"parameters": {"max_tokens": 5}}])
def test_generate_request_parameters_override_sampling_parameters(server, reference, override):
    prompt = PROMPTS[2]
    expected = reference.greedy(reference.prompt_ids(prompt), 5)
    request = {
        "text_input": prompt,
        "sampling_parameters": greedy_sampling(3),
        "exclude_input_in_output": True,
        **override,
    }
    body = requests.post(model_url(server, "generate"), json=request, timeout=WAIT_S).json()
    assert body["num_output_tokens"] == 5
    assert body["text_output"] == expected.text


@pytest.mark.parametrize("include_stop", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_ends_generation(server, reference, stream, include_stop):
    prompt = PROMPTS[0]
    full = reference.greedy(reference.prompt_ids(prompt), 24).text
    stop = stop_string(full)
    end = full.find(stop) + (len(stop) if include_stop else 0)
    sampling = greedy_sampling(24, stop=[stop], include_stop_str_in_output=include_stop)
    body = {"text_input": prompt, "sampling_parameters": sampling, "exclude_input_in_output": True, "stream": stream}
    response, events = generate_stream(server, body)
    assert response.status_code == 200, response.text
    assert len(events) > 1 if stream else len(events) == 1
    assert "".join(event["text_output"] for event in events) == full[:end]
    assert events[-1]["finish_reason"] == "stop"
    assert events[-1]["num_output_tokens"] < 24


def test_generate_stream_returns_logprobs_of_each_token(server, reference):
    prompt = PROMPTS[3]
    expected = reference.greedy(reference.prompt_ids(prompt), 6, logprobs=2)
    _, events = generate_stream(
        server, {"text_input": prompt, "sampling_parameters": greedy_sampling(6, logprobs=2), "stream": True}
    )
    entries = [entry for event in events for entry in json.loads(event["logprobs"])]
    assert [entry["token_id"] for entry in entries] == expected.token_ids
    for entry, values in zip(entries, expected.logprobs):
        assert entry["logprob"] == pytest.approx(values[entry["token_id"]], abs=1e-4)
        assert len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token_id"] == entry["token_id"]  # greedy takes the top token


def test_tokens_whose_text_is_held_back_go_out_with_the_text_that_completes_them(server, reference):
    """A stop string holds back text: steps that add no visible text send nothing, and the event that carries
    their text carries their tokens and logprobs too, in order."""
    prompt = PROMPTS[2]
    expected = reference.greedy(reference.prompt_ids(prompt), 16, logprobs=1)
    stop = "#" * (len(expected.text) // 2)  # never generated; holds back that many characters less one
    assert stop not in expected.text
    sampling = greedy_sampling(16, logprobs=1, stop=[stop])
    body = {"text_input": prompt, "sampling_parameters": sampling, "exclude_input_in_output": True, "stream": True}
    _, events = generate_stream(server, body)
    per_event = [[entry["token_id"] for entry in json.loads(event["logprobs"])] for event in events]
    assert [token for tokens in per_event for token in tokens] == expected.token_ids
    assert len(per_event[0]) > 1  # the first event waited for text past the held-back window
    assert [event["num_output_tokens"] for event in events] == list(itertools.accumulate(map(len, per_event)))
    assert "".join(event["text_output"] for event in events) == expected.text
    assert events[-1]["finish_reason"] == "length"


def test_generate_renders_chat_messages_with_the_chat_template(server, reference, checkpoint):
    messages = [{"role": "user", "content": "the lazy dog"}]
    expected = reference.greedy(chat_prompt_ids(checkpoint, messages), 6)
    body = {
        "chat_messages": json.dumps(messages),
        "sampling_parameters": greedy_sampling(6),
        "exclude_input_in_output": True,
    }
    response = requests.post(model_url(server, "generate"), json=body, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected.text
    assert response.json()["num_input_tokens"] == len(chat_prompt_ids(checkpoint, messages))
    bad = {"chat_messages": json.dumps({"role": "user"}), "sampling_parameters": greedy_sampling(6)}
    response = requests.post(model_url(server, "generate"), json=bad, timeout=WAIT_S)
    assert response.status_code == 400 and "chat_messages" in response.json()["error"]


# -- KServe v2 infer (tritonclient.http) --------------------------------------------------------


def _http_inputs(prompt: str, sampling: str, stream: bool) -> list:
    return llm_inputs(httpclient, prompt, sampling, stream=stream, exclude_input_in_output=True)


def test_kserve_infer_answers_the_single_non_streamed_response(server, reference):
    prompt = PROMPTS[4]
    expected = reference.greedy(reference.prompt_ids(prompt), 8)
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=WAIT_S)
    try:
        result = client.infer(MODEL, _http_inputs(prompt, greedy_sampling(8), stream=False))
        assert text_output(result) == expected.text
        assert string_output(result, "finish_reason") == "length"
        assert int_output(result, "num_input_tokens") == len(reference.prompt_ids(prompt))
        assert int_output(result, "num_output_tokens") == 8
        only_text = client.infer(
            MODEL,
            _http_inputs(prompt, greedy_sampling(8), stream=False),
            outputs=[httpclient.InferRequestedOutput("text_output")],
        )
        assert [output["name"] for output in only_text.get_response()["outputs"]] == ["text_output"]
        assert text_output(only_text) == expected.text
        with pytest.raises(InferenceServerException, match="decoupled"):
            client.infer(MODEL, _http_inputs(prompt, greedy_sampling(8), stream=True))
    finally:
        client.close()
