"""Incremental detokenization that never emits broken UTF-8.

Decoding one token at a time breaks multi-byte characters and word-joining tokenizers.
Each step decodes a short window before the new tokens and after them, and emits the
difference only once it no longer ends in U+FFFD (an incomplete character).

It runs for every request on every step, so it keeps no growing state beyond the token
ids: callers get each step's new text and keep what they need (see output_processor).
"""

from __future__ import annotations

from modelgate.backends.llm.tokenizer import TextTokenizer

_REPLACEMENT = "\ufffd"
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: TextTokenizer, prompt_token_ids: list[int], skip_special_tokens: bool = True):
        self._decode = tokenizer.decode
        self.skip_special_tokens = skip_special_tokens
        self.token_ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.token_ids)
        # The decoded window [prefix_offset, read_offset): it only changes when text is emitted, so a
        # step that holds back an incomplete character reuses it.
        self._prefix_text: str | None = None

    def add(self, new_token_ids: list[int]) -> str:
        """Append tokens; return the newly complete text (maybe empty)."""
        token_ids = self.token_ids
        token_ids.extend(new_token_ids)
        prefix = self._prefix_text
        if prefix is None:
            prefix = self._prefix()
        full = self._decode(token_ids[self.prefix_offset :], self.skip_special_tokens)
        if len(full) <= len(prefix) or full.endswith(_REPLACEMENT):
            return ""
        self.prefix_offset = max(self.read_offset, len(token_ids) - _CONTEXT_TOKENS)
        self.read_offset = len(token_ids)
        self._prefix_text = None
        return full[len(prefix) :]

    def flush(self) -> str:
        """At the end of a request: emit whatever is held back, incomplete character or not."""
        prefix = self._prefix()
        full = self._decode(self.token_ids[self.prefix_offset :], self.skip_special_tokens)
        new_text = full[len(prefix) :] if full.startswith(prefix) else ""
        self.prefix_offset = self.read_offset = len(self.token_ids)
        self._prefix_text = None
        return new_text

    def _prefix(self) -> str:
        if self._prefix_text is None:
            window = self.token_ids[self.prefix_offset : self.read_offset]
            self._prefix_text = self._decode(window, self.skip_special_tokens)
        return self._prefix_text
