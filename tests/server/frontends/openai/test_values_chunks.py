"""A streamed choice's chunk made straight from its response's values (the encoders' `values_chunk`, the LLM
tokens' short path) is the chunk its delta makes, and leaves the same usage behind; where it has no short path
(logprobs, a completion choice's first chunk) it does nothing."""

from __future__ import annotations

import pytest

from modelgate.server.frontends.openai import routes
from modelgate.server.frontends.openai.generation import values_delta
from modelgate.server.frontends.openai.schemas import ChatCompletionRequest, CompletionRequest

TOKENS = [
    {"text_output": " wörd", "finish_reason": "", "num_input_tokens": 5, "num_output_tokens": 2, "logprobs": "[]"},
    {"text_output": "", "finish_reason": "", "num_input_tokens": 5, "num_output_tokens": 3, "logprobs": "[]"},
    {
        "text_output": ' "x"\n',
        "finish_reason": "length",
        "num_input_tokens": 5,
        "num_output_tokens": 4,
        "logprobs": "[]",
    },
]


def _encoders(**fields):
    """Two encoders of one request: one fed deltas (the general path), one fed values where it can."""
    chat = "messages" in fields
    schema = ChatCompletionRequest if chat else CompletionRequest
    body = schema.model_validate({"model": "tiny", "stream": True, "max_tokens": 8, **fields})
    pair = [routes._ChatEncoder(body) if chat else routes._CompletionEncoder(body, ["the prompt"]) for _ in "ab"]
    pair[1].id, pair[1].chunks = pair[0].id, pair[0].chunks  # one response's envelope
    return pair


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"prompt": "the prompt"},
        {"prompt": "the prompt", "echo": True},
        {"prompt": "the prompt", "n": 2},
    ],
)
def test_a_chunk_from_values_is_the_chunk_of_its_delta(fields):
    by_delta, by_values = _encoders(**fields)
    for index in (0, 1) if fields.get("n") else (0,):
        first = values_delta(TOKENS[0], index)  # the choice's first chunk goes through its delta: the echo
        for encoder in (by_delta, by_values):
            encoder.add(first)
            encoder.choice(first)
        for values in TOKENS:
            by_delta.add(values_delta(values, index))
            expected = routes._chunk_json(by_delta, values_delta(values, index))
            assert by_values.values_chunk(index, values) == expected
    assert by_values.usage() == by_delta.usage()


@pytest.mark.parametrize(
    "fields",
    [{"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, {"prompt": "p", "logprobs": 1}],
)
def test_logprobs_take_the_path_of_the_delta(fields):
    _, encoder = _encoders(**fields)
    encoder.add(values_delta(TOKENS[0], 0))
    encoder.choice(values_delta(TOKENS[0], 0))
    assert encoder.values_chunk(0, TOKENS[1]) is None
    assert encoder.values_chunk(0, {**TOKENS[1], "logprobs": '[{"token_id": 1}]'}) is None
    assert encoder.output_tokens == {0: 2}  # nothing done


def test_the_first_chunk_of_a_completion_choice_takes_the_path_of_its_delta():
    _, encoder = _encoders(prompt="the prompt", echo=True)
    assert encoder.values_chunk(0, TOKENS[0]) is None  # it carries the echoed prompt
    assert encoder.output_tokens == {}
