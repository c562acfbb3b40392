"""LLM serving through the running server: a tiny random-weight Llama over every API.

One server (its engine in a spawned process) serves the model for the whole module. Greedy
results are checked against the same checkpoint run by an in-process `LLMEngine`, alone.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from server.inference_types import InferRequest, InferTensor
from tests.backends.llm.serving_helpers import (
    WAIT_S,
    GrpcStream,
    ReferenceEngine,
    int_output,
    is_final,
    llm_inputs,
    llm_metrics,
    metric_delta,
    string_output,
    text_output,
    wait_engine_idle,
)
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint
from tests.server_harness import RunningServer, start_server

MODEL = "tiny"
MAX_MODEL_LEN = 128
ENGINE_SETTINGS = {"num_kv_blocks": 64, "block_size": 4, "max_model_len": MAX_MODEL_LEN}
LABELS = {"model": MODEL, "version": "1"}
PROMPTS = ["quick brown", "the lazy dog", "a stitch in time", "apple a day", "café naïve"]
TOO_LONG = "the quick brown fox jumps over the lazy dog " * 40


# -- the server, the reference engine, requests ---------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("llm_repository") / MODEL / "1")


@pytest.fixture(scope="module")
def server(checkpoint) -> RunningServer:
    parameters = dict(ENGINE_SETTINGS, show_progress="false")
    config = f'name: "{MODEL}"\nbackend: "llm"\n' + "".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{str(value).lower()}" }} }}\n'
        for key, value in parameters.items()
    )
    (checkpoint.parent / "config.pbtxt").write_text(config)
    running = start_server([checkpoint.parent.parent])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reference(checkpoint) -> ReferenceEngine:
    return ReferenceEngine(checkpoint, **ENGINE_SETTINGS)


@pytest.fixture(scope="module")
def oai(server) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0, timeout=WAIT_S)
    yield client
    client.close()


def _url(server: RunningServer, route: str) -> str:
    return f"http://{server.http_url}/v2/models/{MODEL}/{route}"


def _sampling(max_tokens: int, **fields) -> str:
    return json.dumps({"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, **fields})


def _generate(server: RunningServer, prompt: str, max_tokens: int, **body) -> requests.Response:
    body = {"text_input": prompt, "sampling_parameters": _sampling(max_tokens), **body}
    return requests.post(_url(server, "generate"), json=body, timeout=WAIT_S)


def _generate_stream(server: RunningServer, body: dict) -> tuple[requests.Response, list[dict]]:
    response = requests.post(_url(server, "generate_stream"), json=body, timeout=WAIT_S)
    events = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n") if line.startswith("data: ")]
    return response, events


def _stop_string(text: str) -> str:
    """Two characters from the second half of `text` (no U+FFFD, which may stand for held-back bytes)."""
    for start in range(len(text) // 2, len(text) - 1):
        candidate = text[start : start + 2]
        if "\ufffd" not in candidate:
            return candidate
    raise AssertionError(f"no usable stop string in {text!r}")


def _metrics(server: RunningServer) -> dict[str, float]:
    return llm_metrics(server.metrics_url, LABELS)


def _wait_engine_idle(server: RunningServer) -> dict[str, float]:
    return wait_engine_idle(server.metrics_url, LABELS)


# -- generate and generate_stream ---------------------------------------------------------------


@pytest.mark.parametrize("exclude_input", [True, False])
def test_generate_greedy_equals_the_engine_alone(server, reference, exclude_input):
    prompt = PROMPTS[0]
    expected = reference.greedy(reference.prompt_ids(prompt), 12)
    response = _generate(server, prompt, 12, exclude_input_in_output=exclude_input)
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
    whole = _generate(server, prompt, 10, exclude_input_in_output=True).json()
    response, events = _generate_stream(
        server, {"text_input": prompt, "sampling_parameters": _sampling(10), "stream": True})
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
    request = {"text_input": prompt, "sampling_parameters": _sampling(3), "exclude_input_in_output": True, **override}
    body = requests.post(_url(server, "generate"), json=request, timeout=WAIT_S).json()
    assert body["num_output_tokens"] == 5
    assert body["text_output"] == expected.text


@pytest.mark.parametrize("include_stop", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_ends_generation(server, reference, stream, include_stop):
    prompt = PROMPTS[0]
    full = reference.greedy(reference.prompt_ids(prompt), 24).text
    stop = _stop_string(full)
    end = full.find(stop) + (len(stop) if include_stop else 0)
    sampling = _sampling(24, stop=[stop], include_stop_str_in_output=include_stop)
    body = {"text_input": prompt, "sampling_parameters": sampling, "exclude_input_in_output": True, "stream": stream}
    response, events = _generate_stream(server, body)
    assert response.status_code == 200, response.text
    assert len(events) > 1 if stream else len(events) == 1
    assert "".join(event["text_output"] for event in events) == full[:end]
    assert events[-1]["finish_reason"] == "stop"
    assert events[-1]["num_output_tokens"] < 24


def test_generate_stream_returns_logprobs_of_each_token(server, reference):
    prompt = PROMPTS[3]
    expected = reference.greedy(reference.prompt_ids(prompt), 6, logprobs=2)
    _, events = _generate_stream(server, {"text_input": prompt, "sampling_parameters": _sampling(6, logprobs=2),
                                          "stream": True})
    entries = [entry for event in events for entry in json.loads(event["logprobs"])]
    assert [entry["token_id"] for entry in entries] == expected.token_ids
    for entry, values in zip(entries, expected.logprobs):
        assert entry["logprob"] == pytest.approx(values[entry["token_id"]], abs=1e-4)
        assert len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token_id"] == entry["token_id"]  # greedy takes the top token


# -- KServe v2 infer (tritonclient.http) --------------------------------------------------------


def _http_inputs(prompt: str, sampling: str, stream: bool) -> list:
    return llm_inputs(httpclient, prompt, sampling, stream=stream, exclude_input_in_output=True)


def test_kserve_infer_answers_the_single_non_streamed_response(server, reference):
    prompt = PROMPTS[4]
    expected = reference.greedy(reference.prompt_ids(prompt), 8)
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=WAIT_S)
    try:
        result = client.infer(MODEL, _http_inputs(prompt, _sampling(8), stream=False))
        assert text_output(result) == expected.text
        assert string_output(result, "finish_reason") == "length"
        assert int_output(result, "num_input_tokens") == len(reference.prompt_ids(prompt))
        assert int_output(result, "num_output_tokens") == 8
        only_text = client.infer(MODEL, _http_inputs(prompt, _sampling(8), stream=False),
                                 outputs=[httpclient.InferRequestedOutput("text_output")])
        assert [output["name"] for output in only_text.get_response()["outputs"]] == ["text_output"]
        assert text_output(only_text) == expected.text
        with pytest.raises(InferenceServerException, match="decoupled"):
            client.infer(MODEL, _http_inputs(prompt, _sampling(8), stream=True))
    finally:
        client.close()


# -- gRPC streaming -----------------------------------------------------------------------------


def test_grpc_stream_text_joins_to_the_whole_text(server, reference):
    prompt = PROMPTS[1]
    expected = reference.greedy(reference.prompt_ids(prompt), 10)
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        stream.send("whole", prompt, _sampling(10), stream=False, exclude_input_in_output=True)
        stream.send("pieces", prompt, _sampling(10))
        results = stream.collect({"whole", "pieces"})
    finally:
        stream.close()
    assert len(results["whole"]) == 1 and text_output(results["whole"][0]) == expected.text
    pieces = results["pieces"]
    assert len(pieces) > 1
    assert "".join(text_output(result) for result in pieces) == expected.text
    finals = [is_final(result) for result in pieces]
    assert finals == [False] * (len(pieces) - 1) + [True]
    assert string_output(pieces[-1], "finish_reason") == "length" and int_output(pieces[-1], "num_output_tokens") == 10


def test_grpc_unary_infer_answers_the_single_non_streamed_response(server, reference):
    prompt = PROMPTS[1]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        result = client.infer(MODEL, llm_inputs(grpcclient, prompt, _sampling(10), stream=False), client_timeout=WAIT_S)
    finally:
        client.close()
    assert text_output(result) == prompt + reference.greedy(reference.prompt_ids(prompt), 10).text
    assert int_output(result, "num_input_tokens") == len(reference.prompt_ids(prompt))


def test_concurrent_grpc_streams_each_get_their_own_text(server, reference):
    streams = [GrpcStream(server.grpc_url, MODEL) for _ in range(3)]
    try:
        for index, stream in enumerate(streams):
            stream.send(f"r{index}", PROMPTS[index], _sampling(12))
        results = [stream.collect({f"r{index}"})[f"r{index}"] for index, stream in enumerate(streams)]
    finally:
        for stream in streams:
            stream.close()
    texts = ["".join(text_output(result) for result in chunks) for chunks in results]
    assert texts == [reference.greedy(reference.prompt_ids(p), 12).text for p in PROMPTS[:3]]
    assert len(set(texts)) == 3


def test_one_grpc_stream_carries_several_requests_at_once(server, reference):
    stream = GrpcStream(server.grpc_url, MODEL)
    try:
        for index, prompt in enumerate(PROMPTS):
            stream.send(f"q{index}", prompt, _sampling(8 + index))
        results = stream.collect({f"q{index}" for index in range(len(PROMPTS))})
    finally:
        stream.close()
    for index, prompt in enumerate(PROMPTS):
        chunks = results[f"q{index}"]
        expected = reference.greedy(reference.prompt_ids(prompt), 8 + index)
        assert "".join(text_output(result) for result in chunks) == expected.text
        assert int_output(chunks[-1], "num_output_tokens") == 8 + index


# -- OpenAI -------------------------------------------------------------------------------------


def _chat_prompt_ids(checkpoint: Path, messages: list[dict]) -> list[int]:
    """The prompt as transformers renders the model's chat template."""
    from transformers import AutoTokenizer

    rendered = AutoTokenizer.from_pretrained(checkpoint).apply_chat_template(messages, add_generation_prompt=True)
    return list(rendered["input_ids"] if isinstance(rendered, Mapping) else rendered)


GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def test_generate_renders_chat_messages_with_the_chat_template(server, reference, checkpoint):
    messages = [{"role": "user", "content": "the lazy dog"}]
    expected = reference.greedy(_chat_prompt_ids(checkpoint, messages), 6)
    body = {"chat_messages": json.dumps(messages), "sampling_parameters": _sampling(6), "exclude_input_in_output": True}
    response = requests.post(_url(server, "generate"), json=body, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected.text
    assert response.json()["num_input_tokens"] == len(_chat_prompt_ids(checkpoint, messages))
    bad = {"chat_messages": json.dumps({"role": "user"}), "sampling_parameters": _sampling(6)}
    response = requests.post(_url(server, "generate"), json=bad, timeout=WAIT_S)
    assert response.status_code == 400 and "chat_messages" in response.json()["error"]


def test_openai_lists_the_llm_models(oai):
    assert [model.id for model in oai.models.list().data] == [MODEL]


def test_openai_completion_choices_logprobs_and_usage(oai, reference):
    prompt_ids = reference.prompt_ids(PROMPTS[0])
    expected = reference.greedy(prompt_ids, 6, logprobs=2)
    completion = oai.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=6, n=2, logprobs=2, **GREEDY)
    assert [choice.index for choice in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.text == expected.text
        assert choice.finish_reason == "length"
        logprobs = choice.logprobs
        assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 6
        assert logprobs.tokens == reference.token_texts(expected.token_ids)
        for token_id, value, values in zip(expected.token_ids, logprobs.token_logprobs, expected.logprobs):
            assert value == pytest.approx(values[token_id], abs=1e-4)
        assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(6)]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (len(prompt_ids), 12)
    assert completion.usage.total_tokens == len(prompt_ids) + 12


def test_openai_completion_echo_stop_and_prompt_lists(oai, reference):
    expected = [reference.greedy(reference.prompt_ids(p), 24).text for p in PROMPTS[:2]]
    echoed = oai.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=24, echo=True, **GREEDY)
    assert echoed.choices[0].text == PROMPTS[0] + expected[0]
    stop = _stop_string(expected[0])
    stopped = oai.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=24, stop=stop, **GREEDY)
    assert stopped.choices[0].text == expected[0][: expected[0].find(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    both = oai.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=24, **GREEDY)
    assert [choice.text for choice in both.choices] == expected
    assert both.usage.prompt_tokens == sum(len(reference.prompt_ids(p)) for p in PROMPTS[:2])
    assert both.usage.completion_tokens == 48


def test_openai_streamed_completion_joins_to_the_whole_one(oai):
    arguments = dict(model=MODEL, prompt=PROMPTS[2], max_tokens=10, n=2, echo=True, **GREEDY)
    whole = oai.completions.create(**arguments)
    texts, reasons, usage = {0: "", 1: ""}, {}, None
    for chunk in oai.completions.create(stream=True, stream_options={"include_usage": True}, **arguments):
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            reasons[choice.index] = choice.finish_reason
    assert texts == {choice.index: choice.text for choice in whole.choices}
    assert texts[0].startswith(PROMPTS[2]) and texts[1].startswith(PROMPTS[2])
    assert reasons == {0: "length", 1: "length"}
    assert usage.model_dump() == whole.usage.model_dump()


@pytest.mark.parametrize("echo", [False, True])
def test_openai_streamed_completion_logprobs_join_to_the_whole_ones(oai, echo):
    arguments = dict(model=MODEL, prompt=PROMPTS[1], max_tokens=10, logprobs=2, echo=echo, **GREEDY)
    whole = oai.completions.create(**arguments).choices[0].logprobs
    joined = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for chunk in oai.completions.create(stream=True, **arguments):
        for key, values in joined.items():
            values += getattr(chunk.choices[0].logprobs, key)
    assert joined["tokens"] == whole.tokens
    assert joined["text_offset"] == whole.text_offset
    assert joined["text_offset"][0] == (len(PROMPTS[1]) if echo else 0)
    assert joined["token_logprobs"] == pytest.approx(whole.token_logprobs, abs=1e-4)
    assert [top.keys() for top in joined["top_logprobs"]] == [top.keys() for top in whole.top_logprobs]


def test_openai_seeded_sampling_is_reproducible(oai):
    arguments = {"model": MODEL, "prompt": PROMPTS[3], "max_tokens": 8, "n": 2, "temperature": 1.0, "seed": 7}
    first = [choice.text for choice in oai.completions.create(**arguments).choices]
    second = [choice.text for choice in oai.completions.create(**arguments).choices]
    assert first == second


def test_openai_chat_renders_the_chat_template(oai, reference, checkpoint):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "quick brown fox"}]
    prompt_ids = _chat_prompt_ids(checkpoint, messages)
    expected = reference.greedy(prompt_ids, 8, logprobs=2)
    chat = oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, logprobs=True, top_logprobs=2,
                                       **GREEDY)
    choice = chat.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text
    assert choice.finish_reason == "length"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (len(prompt_ids), 8)
    content = choice.logprobs.content
    assert [entry.token for entry in content] == reference.token_texts(expected.token_ids)
    for entry, token_id, values in zip(content, expected.token_ids, expected.logprobs):
        assert entry.logprob == pytest.approx(values[token_id], abs=1e-4)
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob == entry.logprob


def test_openai_streamed_chat_joins_to_the_whole_one(oai):
    arguments = dict(model=MODEL, messages=[{"role": "user", "content": "apple a day"}], max_completion_tokens=9,
                     logprobs=True, top_logprobs=1, **GREEDY)
    whole = oai.chat.completions.create(**arguments)
    chunks = list(oai.chat.completions.create(stream=True, stream_options={"include_usage": True}, **arguments))
    assert chunks[0].choices[0].delta.role == "assistant"
    choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
    assert "".join(choice.delta.content or "" for choice in choices) == whole.choices[0].message.content
    assert [choice.finish_reason for choice in choices][-1] == "length"
    assert all(choice.finish_reason is None for choice in choices[:-1])
    streamed_logprobs = [entry.logprob for choice in choices if choice.logprobs for entry in choice.logprobs.content]
    assert streamed_logprobs == pytest.approx([entry.logprob for entry in whole.choices[0].logprobs.content], abs=1e-4)
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert whole.usage.completion_tokens == 9


# -- cancellation -------------------------------------------------------------------------------


LONG = MAX_MODEL_LEN - 12  # more tokens than a client waits for


def test_a_client_leaving_generate_stream_frees_the_engine(server, reference):
    before = _wait_engine_idle(server)
    body = {"text_input": "hello", "sampling_parameters": _sampling(LONG), "stream": True}
    connection = http.client.HTTPConnection(*server.http_url.split(":"), timeout=WAIT_S)
    connection.request("POST", f"/v2/models/{MODEL}/generate_stream", json.dumps(body),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    after = _wait_engine_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG
    assert metric_delta(before, after, "modelgate_llm_prompt_tokens_total") == len(reference.prompt_ids("hello"))
    assert _generate(server, "hello", 4).json()["num_output_tokens"] == 4


def test_a_cancelled_grpc_stream_frees_the_engine(server):
    before = _wait_engine_idle(server)
    stream = GrpcStream(server.grpc_url, MODEL)
    stream.send("long", "hello", _sampling(LONG))
    result, error = stream.next()
    assert error is None and not is_final(result)
    stream.close(cancel=True)
    after = _wait_engine_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG
    again = GrpcStream(server.grpc_url, MODEL)
    try:
        again.send("next", "hello", _sampling(4))
        assert int_output(again.collect({"next"})["next"][-1], "num_output_tokens") == 4
    finally:
        again.close()


def test_a_request_cancelled_before_it_reaches_the_engine_does_not_run(server):
    """A client gone right after sending: its stream is cancelled before the backend's execute runs."""
    before = _wait_engine_idle(server)
    tensors = {name: InferTensor(name, "BYTES", (1,), np.array([value.encode()], dtype=object))
               for name, value in (("text_input", "hello"), ("sampling_parameters", _sampling(LONG)))}
    tensors["stream"] = InferTensor("stream", "BOOL", (1,), np.array([True]))

    async def send_and_leave():
        stream = await server.server.dataplane.infer_stream(InferRequest(MODEL, inputs=tensors))
        stream.cancel()

    server.run(send_and_leave())
    deadline = time.monotonic() + WAIT_S
    # the aborted request is counted once the engine reports it finished
    while not metric_delta(before, _metrics(server), "modelgate_llm_prompt_tokens_total"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    after = _wait_engine_idle(server)
    assert metric_delta(before, after, "modelgate_llm_prompt_tokens_total") > 0
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_a_client_leaving_an_openai_stream_frees_the_engine(server, oai, route):
    before = _wait_engine_idle(server)
    arguments = dict(model=MODEL, max_tokens=LONG // 2, n=2, stream=True, **GREEDY)
    if route == "chat":
        chunks = oai.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **arguments)
    else:
        chunks = oai.completions.create(prompt="hello", **arguments)
    with chunks:
        next(iter(chunks))
    after = _wait_engine_idle(server)
    assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG  # 2 choices of LONG // 2
    assert metric_delta(before, after, "modelgate_llm_e2e_request_latency_seconds_count") == 2
    assert oai.completions.create(model=MODEL, prompt="hello", max_tokens=3, **GREEDY).usage.completion_tokens == 3


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_count_the_requests_tokens_and_latencies(server, reference):
    before = _wait_engine_idle(server)
    prompt = PROMPTS[4]
    _, events = _generate_stream(server, {"text_input": prompt, "sampling_parameters": _sampling(7), "stream": True})
    assert events[-1]["num_output_tokens"] == 7
    after = _wait_engine_idle(server)
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") == 7
    assert metric_delta(before, after, "modelgate_llm_prompt_tokens_total") == len(reference.prompt_ids(prompt))
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "queue_time_seconds"):
        assert metric_delta(before, after, f"modelgate_llm_{name}_count") == 1, name
    assert metric_delta(before, after, "modelgate_llm_inter_token_latency_seconds_count") == 6
    assert metric_delta(before, after, "modelgate_llm_time_to_first_token_seconds_sum") > 0
    assert metric_delta(before, after, "modelgate_llm_prefix_cache_queries") == len(reference.prompt_ids(prompt))
    assert after["modelgate_llm_num_preemptions"] == 0


# -- bad input ----------------------------------------------------------------------------------


BAD_REQUESTS = {
    "prompt past the context": ({"text_input": TOO_LONG}, "context"),
    "max_tokens past the context": ({"sampling_parameters": _sampling(MAX_MODEL_LEN)}, "max_tokens"),
    "negative temperature": ({"sampling_parameters": json.dumps({"temperature": -1})}, "temperature"),
    "non-numeric top_p": ({"sampling_parameters": json.dumps({"top_p": "x"})}, "top_p"),
    "malformed JSON": ({"sampling_parameters": '{"max_tokens": 4,'}, "JSON"),
    "unknown sampling field": ({"sampling_parameters": json.dumps({"max_tokens": 4, "bogus": 1})}, "bogus"),
    "sampling_parameters not an object": ({"sampling_parameters": "[1, 2]"}, "object"),
    "empty prompt": ({"text_input": ""}, "empty"),
}


def _bad_body(case: str) -> tuple[dict, str]:
    fields, fragment = BAD_REQUESTS[case]
    return {"text_input": "hello", "sampling_parameters": _sampling(4), **fields}, fragment


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_generate_requests_get_400_json(server, route, case):
    body, fragment = _bad_body(case)
    response = requests.post(_url(server, route), json={**body, "stream": route == "generate_stream"}, timeout=WAIT_S)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert fragment in response.json()["error"]


@pytest.mark.parametrize("name, value", [
    ("temperature", -1), ("top_p", "x"), ("max_tokens", MAX_MODEL_LEN), ("max_tokens", 0), ("seed", -3),
])
def test_bad_generate_request_parameters_get_400(server, name, value):
    response = requests.post(_url(server, "generate"), json={"text_input": "hello", name: value}, timeout=WAIT_S)
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
        stream.send("good", "hello", _sampling(4))
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


@pytest.mark.parametrize("fields, fragment", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi", "bogus": 1}]}, "bogus"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": TOO_LONG}]}, "context"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "image_url"),
    ({"top_logprobs": 99}, "top_logprobs"),
    ({"frequency_penalty": 5}, "frequency_penalty"),
    ({"stream_options": {"include_usage": True, "extra": 1}}, "extra"),
])
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
    before = _wait_engine_idle(server)
    for case in BAD_REQUESTS:
        assert requests.post(_url(server, "generate"), json=_bad_body(case)[0], timeout=WAIT_S).status_code == 400
    for case, (fields, _) in BAD_OPENAI.items():
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, **fields}
        assert requests.post(f"http://{server.http_url}/v1/completions", json=body, timeout=WAIT_S).status_code == 400
    good = _generate(server, "hello", 4).json()
    after = _wait_engine_idle(server)
    assert metric_delta(before, after, "modelgate_llm_prefix_cache_queries") == good["num_input_tokens"]
    assert metric_delta(before, after, "modelgate_llm_generation_tokens_total") == 4
    assert metric_delta(before, after, "modelgate_llm_time_to_first_token_seconds_count") == 1


def test_chat_without_max_tokens_may_use_the_rest_of_the_context(oai):
    reply = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "quick brown"}],
                                        temperature=0, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == MAX_MODEL_LEN - reply.usage.prompt_tokens
    assert reply.choices[0].finish_reason == "length"
