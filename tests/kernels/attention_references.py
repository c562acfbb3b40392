"""Helpers of the paged-attention kernel tests: random paged caches, step layouts, and a float64 loop reference
that shares no code with the kernels' own torch references (so those are checked too)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from modelgate.kernels.reshape_and_cache import FP8_DTYPE, allocate_kv_cache, reshape_and_cache_reference

# Stated tolerances, as ||out - ref|| / ||ref|| against the kernels' fp32 torch references:
# fp32 q and cache: fp32 arithmetic throughout ("ieee" dots), only summation order differs.
FP32_TOLERANCE = 1e-5
# bf16 q (bf16 or FP8 cache): the kernel rounds P to bf16 for the P.V product and rounds the output to bf16
# (the interpreter truncates instead of rounding); measured 3e-3..7e-3 on these shapes.
BF16_TOLERANCE = 1e-2


@dataclass
class PagedCache:
    """One layer's cache with random contents and the block tables of a batch of sequences."""

    kv_cache: torch.Tensor  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    kv_scales: torch.Tensor | None  # [2, num_blocks, block_size, num_kv_heads] float32 (FP8)
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, padded with block 0 (a real block: not ours)
    context_lens: torch.Tensor  # [num_seqs] int32

    @property
    def block_size(self) -> int:
        return self.kv_cache.shape[2]


def make_paged_cache(
    context_lens: list[int],
    block_size: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device,
    generator: torch.Generator,
    spare_blocks: int = 3,
) -> PagedCache:
    """Every block filled with random K/V (through the torch write path, quantized for FP8), sequences given
    shuffled disjoint blocks, so a wrong block or offset reads someone else's data rather than zeros."""
    blocks_per_seq = [math.ceil(n / block_size) for n in context_lens]
    num_blocks = sum(blocks_per_seq) + spare_blocks
    kv_cache, kv_scales = allocate_kv_cache(num_blocks, block_size, num_kv_heads, head_dim, dtype, device)
    num_slots = num_blocks * block_size
    keys = random_kv((num_slots, num_kv_heads, head_dim), generator, device)
    values = random_kv((num_slots, num_kv_heads, head_dim), generator, device)
    reshape_and_cache_reference(keys, values, kv_cache, torch.arange(num_slots, device=device), kv_scales)
    order = torch.randperm(num_blocks, generator=generator).to(torch.int32)
    block_tables = torch.zeros((len(context_lens), max(blocks_per_seq, default=0) + 1), dtype=torch.int32)
    taken = 0
    for index, count in enumerate(blocks_per_seq):
        block_tables[index, :count] = order[taken : taken + count]
        taken += count
    lens = torch.tensor(context_lens, dtype=torch.int32)
    return PagedCache(kv_cache, kv_scales, block_tables.to(device), lens.to(device))


def on_device(generator: torch.Generator, device) -> torch.Generator:
    """A generator on `device` seeded from `generator` (big GPU tensors are drawn on the GPU)."""
    device = torch.device(device)
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def random_kv(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    """Normal values whose (token, head) magnitudes vary over 100x, as real K/V do (sink tokens, outliers)."""
    drawing = on_device(generator, device)
    x = torch.randn(shape, generator=drawing, device=device)
    magnitudes = torch.empty(shape[:-1], device=device).uniform_(-2.3, 2.3, generator=drawing).exp_()
    return (x * magnitudes[..., None]).to(dtype)


def random_fp8_bits(shape, generator: torch.Generator, device) -> torch.Tensor:
    """float8_e4m3fn tensor of random bit patterns (subnormals and +-448 included), NaN codes replaced by 0."""
    bits = torch.randint(0, 256, shape, generator=on_device(generator, device), dtype=torch.int32, device=device)
    bits = torch.where((bits & 0x7F) == 0x7F, 0, bits)
    return bits.to(torch.uint8).view(FP8_DTYPE)


def query_start_of(num_queries: list[int], device) -> torch.Tensor:
    """[num_seqs + 1] int32 prefix sums."""
    starts = [0]
    for n in num_queries:
        starts.append(starts[-1] + n)
    return torch.tensor(starts, dtype=torch.int32, device=device)


def naive_attention_float64(
    q: torch.Tensor,  # [num_queries, num_heads, head_dim]
    keys: torch.Tensor,  # [context_len, num_kv_heads, head_dim] (dequantized)
    values: torch.Tensor,  # [context_len, num_kv_heads, head_dim]
    query_positions: list[int],
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:  # [num_queries, num_heads, head_dim] float64
    """Query by query, head by head, in float64: the definition the kernels must implement."""
    num_queries, num_heads, head_dim = q.shape
    group = num_heads // keys.shape[1]
    out = torch.zeros((num_queries, num_heads, head_dim), dtype=torch.float64)
    for row, position in enumerate(query_positions):
        first = 0 if sliding_window is None else max(0, position - sliding_window + 1)
        for head in range(num_heads):
            k = keys[first : position + 1, head // group].double().cpu()
            v = values[first : position + 1, head // group].double().cpu()
            if k.shape[0] == 0:
                continue
            weights = torch.softmax(k @ q[row, head].double().cpu() * scale, dim=0)
            out[row, head] = weights @ v
    return out


def gather_dequantized(cache: PagedCache, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence `index`'s K and V in float32, read slot by slot (independently of gather_kv_reference)."""
    length = int(cache.context_lens[index])
    table = cache.block_tables[index].tolist()
    keys, values = [], []
    for position in range(length):
        block, offset = table[position // cache.block_size], position % cache.block_size
        k = cache.kv_cache[0, block, offset].float()
        v = cache.kv_cache[1, block, offset].float()
        if cache.kv_scales is not None:
            k = k * cache.kv_scales[0, block, offset][:, None]
            v = v * cache.kv_scales[1, block, offset][:, None]
        keys.append(k)
        values.append(v)
    empty = cache.kv_cache.new_zeros((0,) + tuple(cache.kv_cache.shape[3:]), dtype=torch.float32)
    return (torch.stack(keys), torch.stack(values)) if keys else (empty, empty)
