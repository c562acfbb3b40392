"""How a Llama-family model splits over tensor-parallel ranks, from its config alone.

Column-parallel (each rank a slice of the output rows): qkv_proj (its q, k and v parts each split by heads),
gate_up_proj (gate and up each split), the embedding and the LM head (by vocabulary rows, padded to a multiple
of the world size). Row-parallel (each rank a slice of the input columns, outputs summed by an all-reduce):
o_proj and down_proj. KV heads: num_kv_heads / world_size per rank when that divides; with more ranks than KV
heads (world_size a multiple of num_kv_heads) each rank holds the one KV head its query heads read, and ranks
sharing it hold copies.

`local_config` is the config of one rank's model: building the ordinary DecoderForCausalLM from it gives every
layer, the attention and the KV cache their per-rank shapes. `checkpoint_slice` tells the weight loader which
slice of each checkpoint tensor a rank reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from modelgate.backends.llm.models.model_config import DecoderConfig


class TensorParallelError(ValueError):
    """The model cannot be split over this many ranks; the message names the field and what is allowed."""


@dataclass(frozen=True)
class CheckpointSlice:
    """Rows or columns [start, start + length) of a checkpoint tensor along `dim` (0: rows, 1: columns);
    they fill the first `length` entries of the parameter along that dim (fewer than it has only for the last
    ranks' padded vocabulary slices)."""

    dim: int
    start: int
    length: int


@dataclass(frozen=True)
class Shard:
    """One rank's part of a model of config `full`."""

    full: DecoderConfig
    rank: int
    world_size: int

    @property
    def num_heads(self) -> int:
        return self.full.num_heads // self.world_size

    @property
    def num_kv_heads(self) -> int:
        return max(1, self.full.num_kv_heads // self.world_size)

    @property
    def first_kv_head(self) -> int:
        if self.full.num_kv_heads >= self.world_size:
            return self.rank * self.num_kv_heads
        return self.rank // (self.world_size // self.full.num_kv_heads)  # replicated: the head its queries read

    @property
    def intermediate_size(self) -> int:
        return self.full.intermediate_size // self.world_size

    @property
    def vocab_rows(self) -> int:
        """Vocabulary rows per rank: the vocabulary padded up to a multiple of the world size."""
        return -(-self.full.vocab_size // self.world_size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_rows

    @property
    def num_real_vocab_rows(self) -> int:
        """This rank's rows that are real tokens (the rest pad the last ranks' slices)."""
        return max(0, min(self.vocab_rows, self.full.vocab_size - self.vocab_start))

    def local_config(self) -> DecoderConfig:
        return dataclasses.replace(
            self.full,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_rows,
        )

    def checkpoint_slice(self, key: str, shape: tuple[int, ...]) -> CheckpointSlice | None:
        """The slice of checkpoint tensor `key` (the weight loader's `<parameter>[#part]` name, `shape` as
        stored) this rank reads; None: the whole tensor (norms, row-parallel biases and weight scales,
        per-tensor weight scales)."""
        name, _, part = key.partition("#")
        module, _, kind = name.rpartition(".")
        if name in ("embed_tokens.weight", "lm_head_weight"):
            return CheckpointSlice(0, self.vocab_start, self.num_real_vocab_rows)
        if kind == "weight_scale" and _numel(shape) == 1:
            return None  # per-tensor: every rank uses it whole
        head_dim = self.full.head_dim
        if module.endswith("self_attn.qkv_proj"):
            if part == "0":
                return CheckpointSlice(0, self.rank * self.num_heads * head_dim, self.num_heads * head_dim)
            return CheckpointSlice(0, self.first_kv_head * head_dim, self.num_kv_heads * head_dim)
        if module.endswith("mlp.gate_up_proj"):
            return CheckpointSlice(0, self.rank * self.intermediate_size, self.intermediate_size)
        if kind != "weight":
            return None  # a row-parallel layer's bias (added once) and per-channel scales (of whole rows)
        if module.endswith("self_attn.o_proj"):
            return CheckpointSlice(1, self.rank * self.num_heads * head_dim, self.num_heads * head_dim)
        if module.endswith("mlp.down_proj"):
            return CheckpointSlice(1, self.rank * self.intermediate_size, self.intermediate_size)
        return None


def check_splittable(config: DecoderConfig, world_size: int) -> None:
    """TensorParallelError unless `config`'s model splits over `world_size` ranks."""
    if world_size == 1:
        return
    problems = []
    if config.num_heads % world_size:
        problems.append(f"num_attention_heads {config.num_heads} is not divisible by it")
    kv = config.num_kv_heads
    if kv % world_size and world_size % kv:
        problems.append(
            f"num_key_value_heads {kv} is neither divisible by it nor divides it (KV heads are split, or "
            f"replicated when the ranks are a multiple of them)"
        )
    if config.intermediate_size % world_size:
        problems.append(f"intermediate_size {config.intermediate_size} is not divisible by it")
    if problems:
        allowed = [n for n in range(1, config.num_heads + 1) if _splits(config, n)]
        raise TensorParallelError(
            f"tensor_parallel_size {world_size} cannot split this model: {'; '.join(problems)}; "
            f"allowed: {', '.join(map(str, allowed))}"
        )


def _splits(config: DecoderConfig, n: int) -> bool:
    kv = config.num_kv_heads
    return not config.num_heads % n and not config.intermediate_size % n and (not kv % n or not n % kv)


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
