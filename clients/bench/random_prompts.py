"""Prompts of random vocabulary ids, as trtllm-bench makes synthetic ones (`--prompt-source random-tokens`).

Each prompt's ids are drawn uniformly from the ordinary vocabulary and decoded to text (every
protocol sends text), then adjusted until the text re-encodes to exactly the wanted ISL as the
server counts it, special tokens included. Random ids seldom survive decode + encode unchanged:
BPE merges neighbours, and byte tokens that form no valid UTF-8 come back as U+FFFD. So each
round takes the re-encoded ids as the prompt and cuts or extends its tail by the difference.

Prompts share nothing, so a prefix cache finds nothing to reuse, unless `prefix_len` > 0: then
every prompt begins (after the special tokens) with the same `prefix_len` random ids, a stand-in
for a shared system prompt in prefix-cache studies, followed by ids of its own.
"""

from __future__ import annotations

import numpy as np

from modelgate.clients.bench.prompt import Prompt, PromptError
from modelgate.clients.bench.prompt_tokenizer import PromptTokenizer

_MAX_ROUNDS = 16  # re-encode-and-adjust rounds of one draw; two or three are the rule
_MAX_DRAWS = 64  # fresh draws before giving up (a draw fails when re-encoding disturbs the shared prefix)


class RandomTokenPrompts:
    def __init__(self, tokenizer: PromptTokenizer, rng: np.random.Generator, prefix_len: int = 0):
        self.tokenizer = tokenizer
        self.rng = rng
        self.prefix_ids = self._stable_prefix(prefix_len) if prefix_len > 0 else []

    def build(self, num_tokens: int) -> Prompt:
        """A prompt that encodes to exactly `num_tokens` ids (BOS included), shared prefix first.

        A prompt holds at least one id of its own: without a shared prefix an ISL too short for that
        is raised to it (as the corpus prompts do); with one, it is a PromptError, since a longer
        prompt would change what a prefix-cache study measures.
        """
        shortest = self.tokenizer.num_special + len(self.prefix_ids) + 1
        if num_tokens < shortest and self.prefix_ids:
            raise PromptError(
                f"ISL {num_tokens} leaves no token of the prompt's own after {self.tokenizer.num_special} special "
                f"token(s) and the shared prefix of {len(self.prefix_ids)}: every ISL must be at least {shortest}"
            )
        target = max(num_tokens, shortest)
        for _ in range(_MAX_DRAWS):
            prompt = self._fit(target)
            if prompt is not None:
                return prompt
        raise PromptError(f"no random text re-encodes to {target} tokens with this tokenizer ({_MAX_DRAWS} draws)")

    def _fit(self, num_tokens: int) -> Prompt | None:
        """One draw adjusted to `num_tokens`; None when re-encoding disturbed the prefix or did not settle."""
        num_prefix = len(self.prefix_ids)
        content = self.prefix_ids + self._draw(num_tokens - self.tokenizer.num_special - num_prefix)
        for _ in range(_MAX_ROUNDS):
            if len(content) <= num_prefix:
                return None  # cut down to the prefix: no id of its own left
            text = self.tokenizer.decode(content)
            content = self.tokenizer.encode_content(text)
            if content[:num_prefix] != self.prefix_ids:
                return None  # merged across the prefix's end: this prompt would not share it
            token_ids = self.tokenizer.encode(text)
            excess = len(token_ids) - num_tokens
            if excess == 0:
                return Prompt(text, num_tokens, token_ids)
            content = content[:-excess] if excess > 0 else content + self._draw(-excess)
        return None

    def _stable_prefix(self, length: int) -> list[int]:
        """`length` random ids that decode to text re-encoding to the same ids, so every prompt can carry them."""
        for _ in range(_MAX_DRAWS):
            ids = self._draw(length)
            for _ in range(_MAX_ROUNDS):
                again = self.tokenizer.encode_content(self.tokenizer.decode(ids))
                if again == ids:
                    return ids
                ids = again[:length] + self._draw(length - len(again))
        raise PromptError(f"no shared prefix of {length} random tokens survives decoding with this tokenizer")

    def _draw(self, count: int) -> list[int]:
        return self.tokenizer.draw(self.rng, max(0, count))
