"""parse_sampling_params: the one check of user sampling fields, with errors that say what is allowed."""

from __future__ import annotations

import math

import pytest

from modelgate.backends.llm.sampling_params import SAMPLING_LIMITS, SamplingParams, parse_sampling_params
from modelgate.core.errors import InvalidArgumentError


def test_defaults_and_set_fields():
    assert parse_sampling_params({}) == SamplingParams()
    params = parse_sampling_params({"max_tokens": 5, "temperature": 0, "stop": ["a"], "seed": 2**63 - 1})
    assert params == SamplingParams(max_tokens=5, temperature=0.0, stop=["a"], seed=2**63 - 1)
    assert isinstance(params.temperature, float) and params.is_greedy


def test_a_single_stop_string_becomes_a_list():
    assert parse_sampling_params({"stop": "\n"}).stop == ["\n"]


def test_numbers_and_booleans_sent_as_strings_are_read():
    params = parse_sampling_params({"max_tokens": "4", "top_p": "0.5", "ignore_eos": "true"})
    assert (params.max_tokens, params.top_p, params.ignore_eos) == (4, 0.5, True)


@pytest.mark.parametrize(
    "fields, fragments",
    [
        ({"max_tokens": 0}, ["max_tokens", ">= 1", "got 0"]),
        ({"temperature": -1}, ["temperature", ">= 0.0 and <= 100.0"]),
        ({"top_p": 0}, ["top_p", "> 0.0 and <= 1.0"]),
        ({"seed": 2**63}, ["seed", "< 9223372036854775808"]),
        ({"logprobs": 21}, ["logprobs", "<= 20"]),
        ({"top_p": "x"}, ["top_p", "expected `float`, got `str`"]),
        ({"max_tokens": 2.5}, ["max_tokens", "expected `int`"]),
        ({"max_tokens": True}, ["max_tokens", "expected `int`, got `bool`"]),
        ({"stop": ["ok", ""]}, ["stop", "must not be empty"]),
        ({"stop_token_ids": [1, -2]}, ["stop_token_ids", "non-negative"]),
        ({"bogus": 1}, ["unknown field", "bogus"]),
        ({"temperature": math.nan}, ["temperature", "got nan"]),
    ],
)
def test_bad_fields_are_named_with_what_they_allow(fields, fragments):
    with pytest.raises(InvalidArgumentError) as caught:
        parse_sampling_params(fields)
    message = caught.value.message
    assert message.startswith("invalid sampling parameters: ")
    for fragment in fragments:
        assert fragment in message


def test_every_range_problem_is_reported_at_once():
    with pytest.raises(InvalidArgumentError) as caught:
        parse_sampling_params({"min_tokens": -1, "presence_penalty": 3, "repetition_penalty": 0})
    assert all(name in caught.value.message for name in ("min_tokens", "presence_penalty", "repetition_penalty"))


def test_every_limit_names_a_field():
    assert set(SAMPLING_LIMITS) <= set(SamplingParams.__struct_fields__)
