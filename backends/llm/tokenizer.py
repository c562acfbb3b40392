"""Text <-> tokens with the `tokenizers` library, from a checkpoint's tokenizer files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


def _token_text(value) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as {"content": ...} objects."""
    if isinstance(value, dict):
        return value.get("content")
    return value


@dataclass
class TokenizerSettings:
    bos_token: str | None
    eos_token: str | None
    chat_template: str | None
    model_max_length: int | None


class TextTokenizer:
    def __init__(self, model_dir: Path):
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the LLM backend needs a tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.settings = _read_settings(Path(model_dir) / "tokenizer_config.json")
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        # Older tokenizers lack encode_batch_fast: encode_batch then (offsets computed, the GIL released too).
        self._encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # A batch encode releases the GIL (`Tokenizer.encode` holds it for the whole call, about 1 s per MB,
        # stalling every thread of the server, the event loop included), and the fast one skips the character
        # offsets nobody here reads: the same ids, 15-30% sooner at every length (tiny_llm's BPE on the CI
        # machine: 476 against 664 us at 1,024 tokens, 5.5 against 6.4 at 8). Part of every request's TTFT.
        return self._encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokenizer.id_to_token(token_id)

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id(self.settings.eos_token)


def _read_settings(path: Path) -> TokenizerSettings:
    raw = json.loads(path.read_text()) if path.is_file() else {}
    template = raw.get("chat_template")
    if isinstance(template, list):  # named templates: take "default"
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (path.parent / "chat_template.jinja").is_file():
        template = (path.parent / "chat_template.jinja").read_text()
    return TokenizerSettings(
        bos_token=_token_text(raw.get("bos_token")),
        eos_token=_token_text(raw.get("eos_token")),
        chat_template=template,
        model_max_length=raw.get("model_max_length") if isinstance(raw.get("model_max_length"), int) else None,
    )
