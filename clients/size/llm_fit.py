"""What an LLM instance's memory holds: its weights, then a KV cache of whole blocks, and how many sequences of
isl + osl tokens that cache holds at once.

The engine's settings come from the model's parameters as the LLM backend reads them (backends/llm/
engine_config.py): `quantization` (fp8: FP8 weights; an FP8 checkpoint, `quantization_config.quant_method`
fp8 in its config.json, loads as FP8 whatever it says), `dtype` (auto: the checkpoint's `torch_dtype`),
`kv_cache_dtype` (fp8, else the model's dtype), `block_size`, `max_model_len` (at most the checkpoint's
`max_position_embeddings`), `max_num_seqs`, `num_kv_blocks` (a fixed cache). The KV budget is the instance's
bytes (its declared size or its share of the GPU) less the weights and `overhead_bytes`; the engine also takes
its activations' peak and CUDA graphs from it, which it measures at load and a plan cannot know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.clients.size.checkpoint_shape import CheckpointShape, CheckpointShapeError
from modelgate.clients.size.memory import plan
from modelgate.clients.size.packing import Placement
from modelgate.core.byte_sizes import gib

# The engine's dtype names -> memory.py's; a checkpoint dtype the engine does not know runs as bfloat16.
_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
ENGINE_DEFAULTS = {"block_size": 16, "max_num_seqs": 64}


@dataclass(frozen=True)
class LlmFit:
    placement: Placement
    weights_dtype: str
    kv_dtype: str
    block_size: int
    weight_bytes: int
    kv_bytes_per_token: int
    kv_budget_bytes: int  # the instance's bytes less weights and overhead
    kv_tokens: int  # whole blocks
    max_model_len: int
    sequence_tokens: int  # isl + osl
    sequences_by_kv: int  # sequences of sequence_tokens whose blocks fit in the cache at once
    max_num_seqs: int
    problem: str | None = None  # why this LLM does not work as configured at this isl/osl

    @property
    def concurrent_sequences(self) -> int:
        return min(self.sequences_by_kv, self.max_num_seqs)


class LlmSettingsError(ValueError):
    """The checkpoint or a parameter cannot be read; the message names which."""


def fit_llm(placement: Placement, config: ModelConfig, version_dir: Path, isl: int, osl: int, overhead_bytes: int = 0):
    """The LlmFit of a placed LLM GPU instance; LlmSettingsError when its checkpoint or settings cannot be read."""
    raw, shape = _checkpoint(version_dir)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    model_dtype = _model_dtype(parameters.get("dtype", "auto"), raw)
    is_fp8 = parameters.get("quantization") == "fp8" or _quant_method(raw) == "fp8"
    weights_dtype = "fp8" if is_fp8 else model_dtype
    kv_dtype = "fp8" if parameters.get("kv_cache_dtype") == "fp8" else model_dtype
    block_size = _integer(parameters, "block_size", config.name)
    max_positions = int(raw.get("max_position_embeddings", 2048))
    max_model_len = min(_integer(parameters, "max_model_len", config.name, max_positions), max_positions)
    result = plan(shape, placement.bytes, 1.0, weights_dtype, kv_dtype, isl, osl, block_size, overhead_bytes)
    blocks = result.kv_tokens // block_size
    fixed_blocks = _integer(parameters, "num_kv_blocks", config.name, 0)
    problem = None
    if result.weight_bytes + overhead_bytes > placement.bytes:
        problem = f"its weights ({gib(result.weight_bytes)}, {weights_dtype}) do not fit its {gib(placement.bytes)}"
    elif fixed_blocks:
        needed = fixed_blocks * block_size * result.kv_bytes_per_token
        if needed > result.kv_budget_bytes:
            problem = (
                f"num_kv_blocks {fixed_blocks} need {gib(needed)}, its weights leave {gib(result.kv_budget_bytes)}"
            )
        blocks = fixed_blocks
    blocks_per_sequence = -(-(isl + osl) // block_size)
    if problem is None and isl + osl > max_model_len:
        problem = f"a sequence of {isl + osl} tokens (isl + osl) is longer than max_model_len {max_model_len}"
    elif problem is None and blocks < blocks_per_sequence:
        problem = f"its KV cache holds {blocks * block_size} tokens, not one sequence of {isl + osl}"
    return LlmFit(
        placement,
        weights_dtype,
        kv_dtype,
        block_size,
        result.weight_bytes,
        result.kv_bytes_per_token,
        result.kv_budget_bytes,
        blocks * block_size,
        max_model_len,
        isl + osl,
        blocks // blocks_per_sequence,
        _integer(parameters, "max_num_seqs", config.name),
        problem,
    )


def _checkpoint(version_dir: Path) -> tuple[dict, CheckpointShape]:
    path = version_dir / "config.json"
    try:
        raw = json.loads(path.read_text())
        return raw, CheckpointShape.from_dict(raw, str(path))
    except (OSError, ValueError) as exc:  # CheckpointShapeError is a ValueError, and so is bad JSON
        message = str(exc) if isinstance(exc, CheckpointShapeError) else f"{path}: cannot read the checkpoint: {exc}"
        raise LlmSettingsError(message) from None


def _model_dtype(setting: str, raw: dict) -> str:
    name = str(raw.get("torch_dtype") or raw.get("dtype") or "float32") if setting == "auto" else setting
    return _DTYPES.get(name, "bf16")


def _quant_method(raw: dict) -> str | None:
    quantization = raw.get("quantization_config")
    return quantization.get("quant_method") if isinstance(quantization, dict) else None


def _integer(parameters: dict[str, str], key: str, model: str, default: int | None = None) -> int:
    text = parameters.get(key)
    if text is None:
        return ENGINE_DEFAULTS[key] if default is None else default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise LlmSettingsError(f"model '{model}' config: parameters.{key}: '{text}' is not a positive integer")
    return value
