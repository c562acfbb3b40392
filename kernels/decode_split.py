"""How decode attention cuts the KV length across programs (flash-decoding) and its launch configuration.

`plan_decode_split` picks a split when (sequences x KV heads) alone would leave the GPU's SMs short of
programs; a caller that captures CUDA graphs fixes one from max_model_len instead (backends/llm/cuda_graphs.py).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

# The split planner aims at this many programs per SM (enough to hide memory latency and even out the tail)...
TARGET_PROGRAMS_PER_SM = 4
# ...and never plans partitions shorter than this: one default tile. A partition's partials (head_dim floats
# per query head: 2 KB at 4 query heads per KV head) are an eighth of the bf16 K/V of a 64-token tile, while
# every extra tile a program walks costs a dependent round trip to memory (block table, then K/V).
MIN_PARTITION_SIZE = 64
# Programs per SM from which default_decode_config takes its narrow two-warp tiles (short contexts at large
# batches are latency-bound: more programs resident hide more of it; fewer, wider programs win below).
NARROW_MIN_PROGRAMS_PER_SM = 8
# SMs assumed when there is no GPU (CPU tests plan as an H100 SXM would).
DEFAULT_NUM_SMS = 132


class DecodeSplit(NamedTuple):
    """How the KV length is cut: num_partitions programs per (sequence, KV head), partition_size tokens each.

    num_partitions == 1 is the single pass (partition_size is then unused). With more, partition_size must
    be a multiple of the kernel's BLOCK_N and num_partitions * partition_size >= every context length.
    """

    num_partitions: int
    partition_size: int


class DecodeConfig(NamedTuple):
    """Launch parameters of the main kernel."""

    block_n: int  # KV tokens per tile (power of two, >= 16)
    num_warps: int
    num_stages: int
    words: bool = True  # an FP8 cache is read as int32 words where packed_fp8_ok (kernels/fp8_kv_words.py)
    # With words: the tiles' dots in fp16 whatever the query's dtype (e4m3 converts to fp16 in one instruction,
    # to bf16 through fp32); the query is pre-scaled by the softmax scale, which keeps it well inside fp16's range.
    half_dots: bool = False  # default_decode_config turns it on
    # With half_dots on a Hopper-or-newer GPU: the tiles convert to fp16 through inline PTX, two words at a time
    # (kernels/fp8_kv_words.py); same values, fewer instructions.
    ptx_convert: bool = False


SINGLE_PASS = DecodeSplit(1, 0)


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (DEFAULT_NUM_SMS elsewhere)."""
    if device.type != "cuda":
        return DEFAULT_NUM_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def default_decode_config(head_dim: int, num_programs: int = 0, sms: int = DEFAULT_NUM_SMS) -> DecodeConfig:
    """The launch for `num_programs` (sequence, KV head) programs: an FP8 cache in fp16 dots converted by PTX;
    64-token tiles in 4 warps (32 above head_dim 128), or, with at least NARROW_MIN_PROGRAMS_PER_SM programs
    per SM and head_dim <= 128, 32-token tiles in 2 warps, half the registers, twice the programs resident.
    An H100 with Llama 3 8B heads (benchmarks/decode_attention.py --configs): batch 256 at 193 tokens (2048
    programs) 51 us in narrow tiles against 59; batch 64 (512 programs) 13.9 us at 193 and 53.6 at 1024 in
    the 4-warp tiles, 19.7 and 78.6 in narrow ones."""
    if head_dim <= 128 and num_programs >= NARROW_MIN_PROGRAMS_PER_SM * sms:
        return DecodeConfig(block_n=32, num_warps=2, num_stages=2, half_dots=True, ptx_convert=True)
    block_n = 64 if head_dim <= 128 else 32
    return DecodeConfig(block_n=block_n, num_warps=4, num_stages=2, half_dots=True, ptx_convert=True)


def plan_decode_split(
    num_seqs: int, num_kv_heads: int, max_context_len: int, block_n: int, sms: int = DEFAULT_NUM_SMS
) -> DecodeSplit:
    """Cut each context into the whole number of partitions by which (num_seqs x num_kv_heads) programs fall
    short of TARGET_PROGRAMS_PER_SM per SM, each partition at least MIN_PARTITION_SIZE tokens; a single pass
    when that number is 1 (the grid is at least half full) or the context is short."""
    programs = max(num_seqs * num_kv_heads, 1)
    wanted = TARGET_PROGRAMS_PER_SM * sms // programs
    num_partitions = min(wanted, max_context_len // MIN_PARTITION_SIZE)
    if num_partitions <= 1:
        return SINGLE_PASS
    partition_size = math.ceil(math.ceil(max_context_len / num_partitions) / block_n) * block_n
    return DecodeSplit(math.ceil(max_context_len / partition_size), partition_size)


def check_split(split: DecodeSplit, config: DecodeConfig, max_context_len: int, sliding_window, what: str) -> None:
    if config.block_n < 16 or config.block_n & (config.block_n - 1):
        raise ValueError(f"{what}: config.block_n must be a power of two >= 16, got {config.block_n}")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"{what}: sliding_window must be >= 1 or None, got {sliding_window}")
    if split.num_partitions < 1:
        raise ValueError(f"{what}: split.num_partitions must be >= 1, got {split.num_partitions}")
    if split.num_partitions == 1:
        return
    if split.partition_size <= 0 or split.partition_size % config.block_n:
        raise ValueError(
            f"{what}: split.partition_size must be a positive multiple of block_n={config.block_n}, "
            f"got {split.partition_size}"
        )
    if split.num_partitions * split.partition_size < max_context_len:
        raise ValueError(
            f"{what}: {split.num_partitions} partitions of {split.partition_size} tokens do not cover "
            f"max_context_len={max_context_len}"
        )
