"""Prompts of a wanted input length (ISL), from the source the settings pick.

random-tokens (needs a tokenizer): uniformly random vocabulary ids, as trtllm-bench's synthetic
prompts, optionally after a shared prefix (random_prompts.py). corpus: cuts of a fixed English
text (corpus_prompts.py), the only source without a tokenizer. With a tokenizer both give
prompts that encode to exactly the ISL the server counts, special tokens included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.clients.bench.corpus_prompts import CorpusPrompts
from modelgate.clients.bench.llm_settings import PromptSettings
from modelgate.clients.bench.prompt import Prompt, PromptError
from modelgate.clients.bench.prompt_tokenizer import PromptTokenizer
from modelgate.clients.bench.random_prompts import RandomTokenPrompts

__all__ = ["Prompt", "PromptBuilder", "PromptError"]


class PromptBuilder:
    """Builds one prompt per request; deterministic for a given seed and order of calls."""

    def __init__(self, tokenizer_path: Path | None = None, seed: int = 0, settings: PromptSettings | None = None):
        settings = settings or PromptSettings()
        rng = np.random.default_rng(seed)
        self.tokenizer = PromptTokenizer(tokenizer_path) if tokenizer_path is not None else None
        self.source = settings.resolved_source(has_tokenizer=self.tokenizer is not None)
        if settings.prefix_len and self.source != "random-tokens":
            raise PromptError("a shared prefix is built of random tokens: it needs prompt source random-tokens")
        if self.source == "random-tokens":
            if self.tokenizer is None:
                raise PromptError("random-token prompts need a tokenizer (--tokenizer) to draw ids from")
            self.prompts = RandomTokenPrompts(self.tokenizer, rng, settings.prefix_len)
        else:
            self.prompts = CorpusPrompts(self.tokenizer, rng)

    @property
    def shortest(self) -> int:
        """The fewest tokens a prompt of this source holds as the server counts them: its special tokens
        (BOS), the shared prefix and one token of its own; a shorter ISL is raised to it. 1 without a tokenizer."""
        if self.tokenizer is None:
            return 1
        prefix = len(self.prompts.prefix_ids) if isinstance(self.prompts, RandomTokenPrompts) else 0
        return self.tokenizer.num_special + prefix + 1

    def build(self, num_tokens: int) -> Prompt:
        return self.prompts.build(num_tokens)
