"""/v1/completions with several prompts starts them one after another: whatever ends the starting (a later
prompt refused, the client gone) cancels the choices of the prompts already started, which nobody would read
and which would otherwise each run to their last token. Read from the LLM metrics."""

from __future__ import annotations

import openai
import pytest

from tests.backends.llm.serving.helpers import (
    GREEDY,
    LONG,
    MODEL,
    TOO_LONG,
    completions_until_generating,
    metric_delta,
    wait_server_idle,
)

TOKENS = "modelgate_llm_generation_tokens_total"


def test_a_refused_prompt_cancels_the_prompts_started_before_it(server, oai):
    before = wait_server_idle(server)
    with pytest.raises(openai.BadRequestError, match="context"):
        oai.completions.create(model=MODEL, prompt=["hello", "the lazy dog", TOO_LONG], max_tokens=LONG, **GREEDY)
    after = wait_server_idle(server)
    assert metric_delta(before, after, TOKENS) < LONG  # neither started prompt ran to its end


def test_a_client_leaving_while_prompts_start_cancels_those_started(server):
    before = wait_server_idle(server)
    completions_until_generating(server, 16, at_least=2, before=before)  # two prompts started at least
    after = wait_server_idle(server)
    assert metric_delta(before, after, TOKENS) < LONG  # no started prompt ran to its end
