"""The benchmark's view of a model's tokenizer: counting as the server does, and the ids a prompt may draw.

The server encodes a prompt's text with `tokenizer.json`, special tokens (BOS) included, so
that is how prompt lengths are counted here. Random prompts draw only ordinary vocabulary
entries: added tokens and the special tokens that `tokenizer_config.json` names (BOS, EOS,
UNK, PAD, ...) are left out, as a model never sees them inside user text, and so are tokens
that are no text on their own: byte fragments of multi-byte characters (byte-level BPE's
upper bytes, SentencePiece's <0xE2>). Drawn next to arbitrary neighbours these decode to
U+FFFD, which re-encodes to the same few ids every time, so prompts would begin alike far
more often than chance.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from modelgate.clients.bench.prompt import PromptError

# Keys of tokenizer_config.json whose values name special tokens (a string or {"content": ...}).
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class PromptTokenizer:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}: pass a tokenizer.json file or a folder holding one")
        self.tokenizer = Tokenizer.from_file(str(file))
        self.file = file
        self.special_ids = _special_ids(self.tokenizer, file.parent / "tokenizer_config.json")
        probe = "hello"
        self.num_special = len(self.encode(probe)) - len(self.encode_content(probe))

    @cached_property
    def drawable_ids(self) -> np.ndarray:
        """The ordinary vocabulary, sorted (found on first use: corpus prompts never need it)."""
        vocab_ids = sorted(set(self.tokenizer.get_vocab(with_added_tokens=False).values()) - self.special_ids)
        ids = np.array(_whole_text_ids(self.tokenizer, vocab_ids), dtype=np.int64)
        if len(ids) == 0:
            raise PromptError(f"{self.file}: the vocabulary has no ordinary tokens to draw prompts from")
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids as the server counts them: special tokens (BOS) included."""
        return self.tokenizer.encode(text).ids

    def encode_content(self, text: str) -> list[int]:
        """Ids of the text alone, without the special tokens the post-processor adds."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def draw(self, rng: np.random.Generator, count: int) -> list[int]:
        """`count` ids drawn uniformly, with replacement, from the ordinary vocabulary."""
        return self.drawable_ids[rng.integers(len(self.drawable_ids), size=count)].tolist()


def _whole_text_ids(tokenizer, ids: list[int]) -> list[int]:
    """The ids that decode, alone, to non-empty text without U+FFFD (no byte fragment)."""
    texts = tokenizer.decode_batch([[i] for i in ids])
    return [i for i, text in zip(ids, texts) if text and "\ufffd" not in text]


def _special_ids(tokenizer, config_file: Path) -> set[int]:
    """Added tokens, the model's unknown token and the special tokens tokenizer_config.json names."""
    ids = set(tokenizer.get_added_tokens_decoder())
    names = [getattr(tokenizer.model, "unk_token", None), *_configured_special_tokens(config_file)]
    ids.update(i for i in map(tokenizer.token_to_id, filter(None, names)) if i is not None)
    return ids


def _configured_special_tokens(config_file: Path) -> list[str]:
    if not config_file.is_file():
        return []
    config = json.loads(config_file.read_text())
    values = [config.get(key) for key in _SPECIAL_KEYS] + list(config.get("additional_special_tokens") or [])
    names = [value.get("content") if isinstance(value, dict) else value for value in values]
    return [name for name in names if isinstance(name, str) and name]
