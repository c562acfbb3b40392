"""One benchmark prompt, as sent, and the error of a prompt that cannot be built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """The text sent, and with a tokenizer its ids as the server encodes it (special tokens included).

    Without a tokenizer both counts are unknown (None): lengths were approximated by words.
    """

    text: str
    num_tokens: int | None
    token_ids: list[int] | None = None


class PromptError(ValueError):
    """Prompts that cannot be built as asked (an ISL too short for the shared prefix, a tokenizer that
    never re-encodes random text to the wanted length)."""
