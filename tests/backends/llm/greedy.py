"""Greedy generation through an engine, for tests that compare two ways of running the same steps."""

from __future__ import annotations

from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.sampling_params import SamplingParams


def greedy_tokens(engine: LLMEngine, prompts: dict[str, int]) -> dict[str, list[int]]:
    """Request i is prompt i (text -> max_tokens), greedy, ignore_eos, all added at once; its tokens by "r<i>"."""
    for i, (text, max_tokens) in enumerate(prompts.items()):
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        engine.add_request(f"r{i}", engine.tokenizer.encode(text), sampling)
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished:
        for output in engine.step():
            tokens.setdefault(output.request_id, []).extend(output.new_token_ids)
    return tokens
