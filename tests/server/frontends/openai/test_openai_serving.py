"""LLM serving over the OpenAI routes (the openai SDK): models, completions and chat, checked against the
engine alone."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.backends.llm.serving.helpers import (
    GREEDY,
    MAX_MODEL_LEN,
    MODEL,
    PROMPTS,
    chat_prompt_ids,
    stop_string,
)


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
    stop = stop_string(expected[0])
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
    chunks = list(oai.completions.create(stream=True, stream_options={"include_usage": True}, **arguments))
    assert len({(chunk.id, chunk.created, chunk.model, chunk.object) for chunk in chunks}) == 1
    for chunk in chunks:
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
    prompt_ids = chat_prompt_ids(checkpoint, messages)
    expected = reference.greedy(prompt_ids, 8, logprobs=2)
    chat = oai.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, logprobs=True, top_logprobs=2, **GREEDY
    )
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
    arguments = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "apple a day"}],
        max_completion_tokens=9,
        logprobs=True,
        top_logprobs=1,
        **GREEDY,
    )
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
    assert len({(chunk.id, chunk.created, chunk.model, chunk.object) for chunk in chunks}) == 1


def test_chat_without_max_tokens_may_use_the_rest_of_the_context(oai):
    reply = oai.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "quick brown"}],
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage.completion_tokens == MAX_MODEL_LEN - reply.usage.prompt_tokens
    assert reply.choices[0].finish_reason == "length"


def test_openai_penalties_reach_the_engine_beside_a_plain_request(oai, reference):
    """frequency and presence penalties (OpenAI's names; their token counts kept on the device): a penalized
    completion is the engine alone's with the same penalties, and not the plain greedy one, while a plain
    greedy completion streams beside it (sharing its steps, as far as their timing lets them)."""
    prompt_ids = reference.prompt_ids(PROMPTS[1])
    plain = reference.greedy(prompt_ids, 24)
    penalized = reference.greedy(prompt_ids, 24, frequency_penalty=1.5, presence_penalty=0.5)
    assert penalized.text != plain.text  # the penalties change this prompt's greedy continuation
    arguments = dict(model=MODEL, prompt=PROMPTS[1], max_tokens=24, **GREEDY)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        beside = pool.submit(
            lambda: "".join(c.choices[0].text for c in oai.completions.create(stream=True, **arguments))
        )
        served = oai.completions.create(frequency_penalty=1.5, presence_penalty=0.5, **arguments)
        assert beside.result() == plain.text
    assert served.choices[0].text == penalized.text
