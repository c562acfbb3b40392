"""Prompts cut from a fixed English corpus at random offsets (`--prompt-source corpus`).

With a tokenizer the count is exact as the server counts it (special tokens such as BOS
included): the text is re-encoded and its cut adjusted until it encodes to the wanted
number of tokens. Without one, lengths are approximate: 0.75 words per token, the usual
ratio of English text under BPE vocabularies; the server's reported ISL is then the truth.
"""

from __future__ import annotations

import numpy as np

from modelgate.clients.bench.prompt import Prompt
from modelgate.clients.bench.prompt_corpus import CORPUS
from modelgate.clients.bench.prompt_tokenizer import PromptTokenizer

WORDS_PER_TOKEN = 0.75
_MAX_ADJUSTMENTS = 8


class CorpusPrompts:
    def __init__(self, tokenizer: PromptTokenizer | None, rng: np.random.Generator):
        self.tokenizer = tokenizer
        self.rng = rng
        self.words = CORPUS.split()
        if tokenizer is not None:
            self.corpus_ids = tokenizer.encode_content(CORPUS)

    def build(self, num_tokens: int) -> Prompt:
        if self.tokenizer is None:
            return Prompt(self._words(max(1, round(num_tokens * WORDS_PER_TOKEN))), None)
        return self._exact(num_tokens)

    def _words(self, count: int) -> str:
        start = int(self.rng.integers(len(self.words)))
        return " ".join(self.words[(start + i) % len(self.words)] for i in range(count))

    def _exact(self, num_tokens: int) -> Prompt:
        start = int(self.rng.integers(len(self.corpus_ids)))
        body = max(1, num_tokens - self.tokenizer.num_special)
        text, ids = "", []
        for _ in range(_MAX_ADJUSTMENTS):
            text = self._decode(start, body)
            ids = self.tokenizer.encode(text)
            if len(ids) == num_tokens or (len(ids) > num_tokens and body == 1):
                break
            body = max(1, body + num_tokens - len(ids))  # re-encoding merged or split tokens at the cut
        return Prompt(text, len(ids), ids)

    def _decode(self, start: int, length: int) -> str:
        ids = [self.corpus_ids[(start + i) % len(self.corpus_ids)] for i in range(length)]
        text = self.tokenizer.decode(ids)
        return text if text.strip() else "hello"
