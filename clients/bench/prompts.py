"""Prompts of a wanted input length (ISL), cut from a fixed corpus at random offsets.

With a tokenizer the count is exact as the server counts it (special tokens such as BOS
included): the text is re-encoded and its cut adjusted until it encodes to the wanted
number of tokens. Without one, lengths are approximate: 0.75 words per token, the usual
ratio of English text under BPE vocabularies; the server's reported ISL is then the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelgate.clients.bench.prompt_corpus import CORPUS

WORDS_PER_TOKEN = 0.75
_MAX_ADJUSTMENTS = 8


@dataclass(frozen=True)
class Prompt:
    text: str
    num_tokens: int | None  # exact with a tokenizer; None when approximated by words


class PromptBuilder:
    def __init__(self, tokenizer_path: Path | None = None, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tokenizer = _load_tokenizer(tokenizer_path) if tokenizer_path is not None else None
        self.words = CORPUS.split()
        if self.tokenizer is not None:
            self.corpus_ids = self.tokenizer.encode(CORPUS, add_special_tokens=False).ids
            probe = "hello"
            self.num_special = len(self.tokenizer.encode(probe).ids) - len(
                self.tokenizer.encode(probe, add_special_tokens=False).ids
            )

    def build(self, num_tokens: int) -> Prompt:
        if self.tokenizer is None:
            return Prompt(self._words(max(1, round(num_tokens * WORDS_PER_TOKEN))), None)
        return self._exact(num_tokens)

    def _words(self, count: int) -> str:
        start = int(self.rng.integers(len(self.words)))
        return " ".join(self.words[(start + i) % len(self.words)] for i in range(count))

    def _exact(self, num_tokens: int) -> Prompt:
        start = int(self.rng.integers(len(self.corpus_ids)))
        body = max(1, num_tokens - self.num_special)
        text, count = "", 0
        for _ in range(_MAX_ADJUSTMENTS):
            text = self._decode(start, body)
            count = len(self.tokenizer.encode(text).ids)
            if count == num_tokens or (count > num_tokens and body == 1):
                break
            body = max(1, body + num_tokens - count)  # re-encoding merged or split tokens at the cut
        return Prompt(text, count)

    def _decode(self, start: int, length: int) -> str:
        ids = [self.corpus_ids[(start + i) % len(self.corpus_ids)] for i in range(length)]
        text = self.tokenizer.decode(ids)
        return text if text.strip() else "hello"


def _load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {path}: pass a tokenizer.json file or a folder holding one")
    return Tokenizer.from_file(str(file))
