"""The shape of a decoder checkpoint, read from its Hugging Face `config.json`: what sizing needs, nothing more.

`modelgate size` speaks about a deployment without loading the engine, so it reads the few numbers that set
weight and KV-cache bytes itself (the engine's own reader, with every architecture rule, lives in the LLM
backend; a test keeps the two in agreement). Biases follow the Llama family's conventions: Qwen2 has q/k/v
biases and no o_proj bias; `attention_bias` turns on both elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class CheckpointShapeError(ValueError):
    """config.json cannot be read or lacks a number sizing needs; the message names the file and the key."""


@dataclass(frozen=True)
class CheckpointShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_file(cls, path: Path) -> CheckpointShape:
        """`path` is a config.json, or a checkpoint folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointShapeError(f"{path}: cannot read the model's config.json: {exc}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> CheckpointShape:
        num_heads = _required(raw, "num_attention_heads", source)
        hidden = _required(raw, "hidden_size", source)
        is_qwen2 = "Qwen2ForCausalLM" in (raw.get("architectures") or []) or raw.get("model_type") == "qwen2"
        attention_bias = bool(raw.get("attention_bias", False))
        return cls(
            vocab_size=_required(raw, "vocab_size", source),
            hidden_size=hidden,
            intermediate_size=_required(raw, "intermediate_size", source),
            num_layers=_required(raw, "num_hidden_layers", source),
            num_heads=num_heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(raw.get("head_dim") or hidden // num_heads),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=is_qwen2 or attention_bias,
            o_bias=attention_bias and not is_qwen2,
            mlp_bias=bool(raw.get("mlp_bias", False)),
        )


def _required(raw: dict, key: str, source: str) -> int:
    if key not in raw:
        raise CheckpointShapeError(f"{source}: '{key}' is missing")
    return int(raw[key])
