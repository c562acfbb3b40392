"""How decode attention's split-KV partitions cut a sequence and how their partials are combined.

A split launch of kernels/paged_decode_attention.py runs num_partitions programs per (sequence, KV head); each
stores its (max, sum, unnormalized output) partials, and the program that counts last combines them, as in
flash-decoding, in the same launch (see that module's docstring for the counter protocol).
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import tl, triton

# The combining program reads at most this many partitions per step...
MAX_COMBINE_PARTITIONS = 32
# ...and at most this many partial floats per step ([query heads, partitions, head dims]: 64 registers per
# thread at 4 warps), so that the combine does not raise the register count of the whole kernel much.
MAX_COMBINE_ELEMENTS = 8192


@triton.jit
def sequence_partitions(context_len, window_start, partition_size, num_partitions, BLOCK_N: tl.constexpr):
    """(first key, tokens per partition) of one sequence: its visible keys, from the tile holding window_start
    to context_len, cut evenly into num_partitions whole tiles, at most partition_size tokens each.

    A split is fixed for the longest context (a CUDA graph fixes it for max_model_len), and shorter sequences
    still spread over every partition instead of over the first few: at batch 1 and context 1024 under a
    split planned for 8192, 16 programs of one tile each per KV head rather than 4 of four tiles (an H100
    profile: each tile of a program costs a dependent block-table and K/V round trip).
    partition_size caps the size, so num_partitions * size covers every context the split covers."""
    first_key = (window_start // BLOCK_N) * BLOCK_N  # tiles start on BLOCK_N multiples
    even = tl.cdiv(tl.cdiv(context_len - first_key, num_partitions), BLOCK_N) * BLOCK_N
    return first_key, tl.minimum(tl.maximum(even, BLOCK_N), partition_size)


@triton.jit
def combine_partitions(
    out_ptr,
    partial_acc_ptr,
    partial_max_ptr,
    partial_sum_ptr,  # as in _paged_decode_kernel
    seq64,  # the sequence (int64)
    kv_head,
    last,  # partitions 0..last-1 hold the partials (the others are empty)
    num_heads,
    num_partitions,
    stride_out_seq,
    stride_out_head,
    QUERIES_PER_KV: tl.constexpr,
    GROUP_POW2: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    COMBINE_BLOCK: tl.constexpr,  # partitions per step
):
    """Output rows of the KV head's query heads from their partitions' partials (flash-decoding): with M the
    largest partition max, out = sum_p exp2(m_p - M) acc_p / sum_p exp2(m_p - M) l_p, summed in partition
    order; 0 where no partition holds a key (an empty context)."""
    groups = tl.arange(0, GROUP_POW2)
    heads = kv_head * QUERIES_PER_KV + groups
    group_mask = groups < QUERIES_PER_KV
    parts = tl.arange(0, COMBINE_BLOCK)
    dims = tl.arange(0, HEAD_DIM_PAD)
    first_rows = (seq64 * num_heads + heads) * num_partitions  # [GROUP_POW2]: each head's partition 0
    # .cg loads: other SMs wrote these partials; read them from L2, the point of coherence, never from a
    # (non-coherent) L1 line of this SM.
    max_seen = tl.full([GROUP_POW2, COMBINE_BLOCK], float("-inf"), tl.float32)
    for p0 in range(0, last, COMBINE_BLOCK):
        rows = first_rows[:, None] + p0 + parts[None, :]
        mask = group_mask[:, None] & (p0 + parts < last)[None, :]
        maxes = tl.load(partial_max_ptr + rows, mask=mask, other=float("-inf"), cache_modifier=".cg")
        max_seen = tl.maximum(max_seen, maxes)
    global_max = tl.max(max_seen, axis=1)
    global_max = tl.where(global_max == float("-inf"), 0.0, global_max)[:, None]
    total = tl.zeros([GROUP_POW2, COMBINE_BLOCK], tl.float32)
    acc = tl.zeros([GROUP_POW2, HEAD_DIM_PAD], tl.float32)
    for p0 in range(0, last, COMBINE_BLOCK):
        rows = first_rows[:, None] + p0 + parts[None, :]  # [GROUP_POW2, COMBINE_BLOCK]
        mask = group_mask[:, None] & (p0 + parts < last)[None, :]
        maxes = tl.load(partial_max_ptr + rows, mask=mask, other=float("-inf"), cache_modifier=".cg")
        weight = tl.exp2(maxes - global_max)
        total += weight * tl.load(partial_sum_ptr + rows, mask=mask, other=0.0, cache_modifier=".cg")
        partial = tl.load(
            partial_acc_ptr + rows[:, :, None] * HEAD_DIM_PAD + dims[None, None, :],
            mask=mask[:, :, None],
            other=0.0,
            cache_modifier=".cg",
        )
        acc += tl.sum(weight[:, :, None] * partial, axis=1)
    denominator = tl.sum(total, axis=1)
    out = acc / tl.where(denominator == 0.0, 1.0, denominator)[:, None]
    out_rows = out_ptr + seq64 * stride_out_seq + heads[:, None] * stride_out_head
    out_mask = group_mask[:, None] & (dims < HEAD_DIM)[None, :]
    tl.store(out_rows + dims[None, :], out.to(out_ptr.dtype.element_ty), mask=out_mask)


def combine_block(num_partitions: int, group_pow2: int, head_dim_pad: int) -> int:
    """Partitions per combine step: a power of two, at most MAX_COMBINE_PARTITIONS and num_partitions (rounded
    up), and within MAX_COMBINE_ELEMENTS partial floats."""
    fit = max(1, MAX_COMBINE_ELEMENTS // (group_pow2 * head_dim_pad))
    fit = 1 << (fit.bit_length() - 1)  # rounded down to a power of two
    return min(MAX_COMBINE_PARTITIONS, triton.next_power_of_2(num_partitions), fit)


def split_partials(num_seqs, num_heads, num_partitions, head_dim_pad, device) -> tuple[torch.Tensor, ...]:
    acc = torch.empty((num_seqs, num_heads, num_partitions, head_dim_pad), dtype=torch.float32, device=device)
    maxes = torch.empty((num_seqs, num_heads, num_partitions), dtype=torch.float32, device=device)
    sums = torch.empty((num_seqs, num_heads, num_partitions), dtype=torch.float32, device=device)
    return acc, maxes, sums
