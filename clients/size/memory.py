"""Memory arithmetic from a checkpoint's config.json: weights, KV cache per token, what fits.

Counts are exact for the Llama family (the architecture modelgate serves): every matrix
and vector of the checkpoint. FP8 weights are the linear layers (attention and MLP) at one
byte per parameter plus one float32 scale per output channel; embeddings, norms and the
LM head stay in 16-bit, as FP8 checkpoints ship them.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.clients.size.checkpoint_shape import CheckpointShape

BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
GIB = 2**30


@dataclass(frozen=True)
class ParameterCounts:
    linear: int  # attention and MLP matrices: what FP8 quantizes
    linear_output_channels: int  # rows of those matrices: one FP8 scale each
    other: int  # embeddings, LM head, norms, biases

    @property
    def total(self) -> int:
        return self.linear + self.other


def parameter_counts(config: CheckpointShape) -> ParameterCounts:
    hidden, inter, head_dim = config.hidden_size, config.intermediate_size, config.head_dim
    q_out, kv_out = config.num_heads * head_dim, config.num_kv_heads * head_dim
    attention = hidden * (q_out + 2 * kv_out) + q_out * hidden
    mlp = 3 * hidden * inter
    channels = (q_out + 2 * kv_out) + hidden + 2 * inter + hidden
    biases = (q_out + 2 * kv_out if config.qkv_bias else 0) + (hidden if config.o_bias else 0)
    biases += (2 * inter + hidden) if config.mlp_bias else 0
    per_layer_other = 2 * hidden + biases  # two RMSNorms
    embeddings = config.vocab_size * hidden * (1 if config.tie_word_embeddings else 2)
    return ParameterCounts(
        linear=config.num_layers * (attention + mlp),
        linear_output_channels=config.num_layers * channels,
        other=config.num_layers * per_layer_other + embeddings + hidden,
    )


def weight_bytes(config: CheckpointShape, weights_dtype: str) -> int:
    counts = parameter_counts(config)
    if weights_dtype == "fp8":
        return counts.linear + 4 * counts.linear_output_channels + 2 * counts.other
    return BYTES_PER_ELEMENT[weights_dtype] * counts.total


def kv_bytes_per_token(config: CheckpointShape, kv_dtype: str) -> int:
    """Keys and values of one token over all layers. The engine's FP8 cache keeps a float32 scale per
    (token, KV head) beside each of K and V (backends/llm/model_runner.py `kv_bytes_per_block`)."""
    scale_bytes = 4 if kv_dtype == "fp8" else 0
    per_head = config.head_dim * BYTES_PER_ELEMENT[kv_dtype] + scale_bytes
    return 2 * config.num_layers * config.num_kv_heads * per_head


@dataclass(frozen=True)
class MemoryPlan:
    weight_bytes: int
    kv_bytes_per_token: int
    kv_budget_bytes: int
    kv_tokens: int
    concurrent_sequences: int  # at isl + osl tokens each, whole blocks
    sequence_tokens: int


def plan(
    config: CheckpointShape,
    gpu_memory_bytes: int,
    utilization: float,
    weights_dtype: str,
    kv_dtype: str,
    isl: int,
    osl: int,
    block_size: int = 16,
    reserve_bytes: int = 0,
) -> MemoryPlan:
    """What fits on one GPU: weights first, then KV cache for sequences of isl + osl tokens."""
    weights = weight_bytes(config, weights_dtype)
    per_token = kv_bytes_per_token(config, kv_dtype)
    budget = max(0, int(gpu_memory_bytes * utilization) - weights - reserve_bytes)
    blocks = budget // (per_token * block_size)
    tokens = blocks * block_size
    sequence = isl + osl
    blocks_per_sequence = -(-sequence // block_size)
    return MemoryPlan(weights, per_token, budget, tokens, blocks // blocks_per_sequence, sequence)
