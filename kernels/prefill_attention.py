"""Prefill / extend attention: the new tokens of each sequence over its cached prefix and themselves, causal.

Sequence i has query tokens [query_start[i], query_start[i + 1]) at positions
[context_lens[i] - num_queries(i), context_lens[i]) (as in backends/llm/attention/metadata.py). All keys, the
new ones included, are read from the paged cache through block_tables, so one kernel serves a fresh prefill,
a chunk of a chunked prefill and a prefill after a prefix-cache hit; reshape_and_cache must run first.

- Tiling (flash attention): a program owns BLOCK_Q consecutive query tokens of one sequence and one KV head,
  and walks the KV tiles of BLOCK_N tokens up to its last query's position with an online softmax in float32.
- GQA grouping: the program's M rows are its BLOCK_Q tokens x the query heads of its KV head
  (row = token * GROUP_PAD + head in group), so each K/V tile is loaded once for the whole group.
- Causal mask by absolute position (key position <= query position); optional sliding window (key position
  > query position - window); bf16/fp16/fp32 or FP8 KV (kernels/reshape_and_cache.py), dequantized in
  registers like the decode kernel (`attend_kv_tile` is shared with it).

`prefill_attention_reference` is the plain-torch version.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from modelgate.kernels.fp8_kv_words import as_words, attend_fp8_words_rows, packed_fp8_ok
from modelgate.kernels.fp8_quant import FP8_DTYPE, check_launchable, is_interpreted, tl, triton
from modelgate.kernels.grid_dependency import pdl_supported
from modelgate.kernels.paged_attention_common import (
    LOG2E,
    attend_kv_tile,
    causal_visible,
    check_query_and_cache,
    check_sequence_tables,
    checked_output,
    dot_precision,
)
from modelgate.kernels.reshape_and_cache import gather_kv_reference


class PrefillConfig(NamedTuple):
    """Launch parameters: block_m rows (query tokens x heads of a group) by block_n keys per tile."""

    block_m: int  # power of two >= 16
    block_n: int  # power of two >= 16
    num_warps: int
    num_stages: int


# The engine packs a step's index tensors into one transfer (step_layout.py), so where each starts moves
# with the lengths before it: specializing on that alignment (or on the block table's width) would compile
# a new variant mid-serving (benchmarks/llm_step_paths.py saw it).
@triton.jit(
    do_not_specialize=["stride_table_seq"],
    do_not_specialize_on_alignment=["block_tables_ptr", "query_start_ptr", "context_lens_ptr"],
)
def _prefill_attention_kernel(
    out_ptr,  # [num_tokens, num_heads, head_dim] output, head_dim stride 1
    q_ptr,  # [num_tokens, num_heads, head_dim] queries, head_dim stride 1
    k_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[0]
    v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[1]
    k_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[0] (IS_FP8)
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[1] (IS_FP8)
    block_tables_ptr,  # [num_seqs, max_blocks] int32
    query_start_ptr,  # [num_seqs + 1] int32: sequence i's query tokens are rows [start[i], start[i + 1])
    context_lens_ptr,  # [num_seqs] int32: cached tokens after this step (prefix + new)
    qk_scale,  # softmax scale * log2(e)
    sliding_window,  # keys a query sees, itself included (HAS_WINDOW)
    stride_q_token,
    stride_q_head,
    stride_out_token,
    stride_out_head,
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,
    stride_table_seq,
    QUERIES_PER_KV: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # QUERIES_PER_KV rounded up to a power of two
    BLOCK_Q: tl.constexpr,  # query tokens per program (BLOCK_Q * GROUP_PAD = M rows, >= 16)
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,  # HEAD_DIM rounded up to a power of two >= 16
    # Tokens per cache block: a constant, so the tiles' block/slot split is shifts, not integer divisions.
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per tile
    HAS_WINDOW: tl.constexpr,
    IS_FP8: tl.constexpr,
    UPCAST_DOT: tl.constexpr,  # dot in fp32 (the interpreter's bf16 dot is broken)
    DOT_PRECISION: tl.constexpr,
    # FP8 cache read as int32 words (kernels/fp8_kv_words.py: the caches are word views), dots in fp16 with the
    # query pre-scaled by qk_scale, as the decode kernel's; PTX_CONVERT: tiles converted by inline PTX.
    WORDS: tl.constexpr = False,
    PTX_CONVERT: tl.constexpr = False,
):
    q_block = tl.program_id(0)
    seq = tl.program_id(1)
    kv_head = tl.program_id(2)
    query_begin = tl.load(query_start_ptr + seq)
    num_queries = tl.load(query_start_ptr + seq + 1) - query_begin
    first_query = q_block * BLOCK_Q
    if first_query >= num_queries:
        return  # the grid is sized for the longest sequence of the step
    context_len = tl.load(context_lens_ptr + seq)
    prefix_len = context_len - num_queries
    rows = tl.arange(0, BLOCK_Q * GROUP_PAD)
    query_index = first_query + rows // GROUP_PAD  # [M] query token within the sequence
    group = rows % GROUP_PAD
    heads = kv_head * QUERIES_PER_KV + group
    row_valid = (query_index < num_queries) & (group < QUERIES_PER_KV)
    query_positions = prefix_len + query_index
    dims = tl.arange(0, HEAD_DIM_PAD)
    row_mask = row_valid[:, None] & (dims < HEAD_DIM)[None, :]
    tokens = (query_begin + query_index).to(tl.int64)
    m = tl.full([BLOCK_Q * GROUP_PAD], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_Q * GROUP_PAD], tl.float32)
    # Keys up to the last query of the block (causal); from the first query's window start.
    end = prefix_len + tl.minimum(first_query + BLOCK_Q, num_queries)
    start = 0
    if HAS_WINDOW:
        start = (tl.maximum(prefix_len + first_query - sliding_window + 1, 0) // BLOCK_N) * BLOCK_N
    block_table_ptr = block_tables_ptr + seq.to(tl.int64) * stride_table_seq
    if WORDS:
        attend_fp8_words_rows(
            out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr, block_table_ptr, m, l, tokens,
            heads, row_valid, query_positions, start, end, kv_head, qk_scale, sliding_window, stride_q_token,
            stride_q_head, stride_out_token, stride_out_head, stride_cache_block, stride_cache_slot,
            stride_cache_head, stride_scale_block, stride_scale_slot, stride_scale_head, HEAD_DIM // 4, BLOCK_SIZE,
            BLOCK_N, HAS_WINDOW, UPCAST_DOT, DOT_PRECISION, PTX_CONVERT,
        )  # fmt: skip
        return
    q_offsets = tokens[:, None] * stride_q_token + heads[:, None] * stride_q_head + dims[None, :]
    q = tl.load(q_ptr + q_offsets, mask=row_mask, other=0.0)
    acc = tl.zeros([BLOCK_Q * GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    for tile_start in range(start, end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        in_context = positions < end
        visible = causal_visible(positions, in_context, query_positions, sliding_window, HAS_WINDOW)
        m, l, acc = attend_kv_tile(
            q,
            m,
            l,
            acc,
            k_cache_ptr,
            v_cache_ptr,
            k_scale_ptr,
            v_scale_ptr,
            block_table_ptr,
            positions,
            in_context,
            visible,
            kv_head,
            BLOCK_SIZE,
            qk_scale,
            stride_cache_block,
            stride_cache_slot,
            stride_cache_head,
            stride_scale_block,
            stride_scale_slot,
            stride_scale_head,
            HEAD_DIM,
            HEAD_DIM_PAD,
            IS_FP8,
            UPCAST_DOT,
            DOT_PRECISION,
        )
    # Every valid row sees at least its own key (l > 0); padded rows are not stored.
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    out_offsets = tokens[:, None] * stride_out_token + heads[:, None] * stride_out_head + dims[None, :]
    tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=row_mask)


# Whether an FP8 cache whose head_dim is a power of two >= 64 is read as int32 words, as the decode kernel reads it
# (fp8_kv_words.py), rather than as bytes. Off until the H100 has timed it: there the decode kernel read the words
# at 1.56x the bytes' speed (batch 256, context 193: 52.7 against 82.6 us), and this kernel's 128-row tile took
# 304 us over an FP8 cache where a bf16 one took 165 (64 sequences at 1,024 tokens, session 28's
# benchmarks/decode_attention.py): the bytes' conversion, not the bytes read, bounds it.
FP8_WORDS = False

# Runs whose longest query has at most this many tokens take SHORT_QUERY_CONFIG (0: none do). A mixed step's
# one-token decodes come here (triton_paged.py's decodes_in_mixed_steps off): in a 128-row program a decode's 4
# query heads fill 4 rows, so nearly all of each tile's dot work is padding. H100, 64 decodes, 32/8 heads
# (benchmarks/decode_attention.py, session 30): at context 2,048 the FP8 cache's took 600 us on the 128-row tile
# and 175 us on this one (the decode kernel: 101), bf16's 317 and 179 (decode kernel 192); at context 256,
# 85 -> 28 us (FP8) and 51 -> 29 (bf16). Served 2048/128 at concurrency 256, with a mixed step's decodes launched
# apart from its chunks on this tile (triton_paged.tile_parts), read 2,847 output tok/s against 2,493 before
# (benchmarks/results/llm_served_2048_short_query_tile_h100_session30.log; two H100s, the same 397 engine steps).
SHORT_QUERY_TOKENS = 1
SHORT_QUERY_CONFIG = PrefillConfig(block_m=16, block_n=128, num_warps=4, num_stages=2)


def default_prefill_config(head_dim: int, max_query_len: int | None = None) -> PrefillConfig:
    """128 x 64 tiles and 8 warps (compute-bound flash-attention shape), or SHORT_QUERY_CONFIG where every query
    of the launch is at most SHORT_QUERY_TOKENS long; smaller tiles past head_dim 128 (whose 128-key tiles
    would not fit shared memory twice)."""
    if head_dim <= 128 and max_query_len is not None and max_query_len <= SHORT_QUERY_TOKENS:
        return SHORT_QUERY_CONFIG
    if head_dim <= 128:
        return PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=2)
    return PrefillConfig(block_m=64, block_n=32, num_warps=4, num_stages=2)


def prefill_attention(
    q: torch.Tensor,  # [num_tokens, num_heads, head_dim] bf16/fp16/fp32
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim] q's dtype or float8_e4m3fn
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32
    query_start: torch.Tensor,  # [num_seqs + 1] int32, query_start[0] == 0, non-decreasing
    context_lens: torch.Tensor,  # [num_seqs] int32, >= the sequence's number of queries
    max_query_len: int,  # host-side upper bound of query_start[i + 1] - query_start[i] (sizes the grid)
    *,
    kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32 (FP8 cache)
    softmax_scale: float | None = None,  # default head_dim ** -0.5
    sliding_window: int | None = None,  # keys a query sees, itself included
    config: PrefillConfig | None = None,
    out: torch.Tensor | None = None,  # [num_tokens, num_heads, head_dim] q's dtype, head_dim stride 1
) -> torch.Tensor:  # [num_tokens, num_heads, head_dim] q's dtype
    """Causal attention of each sequence's new tokens over its whole cached context (prefix + new tokens).

    Invariants (not checked on the device: that would synchronize): the cache already holds the new tokens'
    K/V; query_start[-1] == num_tokens; num_queries(i) <= context_lens[i]; block_tables[i] holds
    ceil(context_lens[i] / block_size) valid blocks; max_query_len >= every num_queries(i) (queries past it are
    left unwritten). Raises ValueError on a shape, dtype, stride or device mismatch.
    """
    what = "prefill_attention"
    _check_arguments(q, kv_cache, block_tables, query_start, context_lens, kv_scales, what)
    check_launchable(_prefill_attention_kernel, what, q, kv_cache, block_tables, query_start, context_lens)
    num_tokens, num_heads, head_dim = q.shape
    num_seqs, num_kv_heads = context_lens.shape[0], kv_cache.shape[3]
    config = config or default_prefill_config(head_dim, max_query_len)
    _check_config(config, sliding_window, what)
    out = checked_output(out, q, what)
    if num_tokens == 0 or num_seqs == 0 or max_query_len <= 0:
        return out
    is_fp8 = kv_cache.dtype == FP8_DTYPE
    words = FP8_WORDS and packed_fp8_ok(kv_cache, head_dim)
    queries_per_kv = num_heads // num_kv_heads
    group_pad = triton.next_power_of_2(queries_per_kv)
    block_q = max(1, config.block_m // group_pad)
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    k_scale, v_scale = (kv_scales[0], kv_scales[1]) if is_fp8 else (k_cache, v_cache)
    strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))
    if words:
        k_cache, v_cache = as_words(k_cache), as_words(v_cache)
        strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))  # in words
    scale = (softmax_scale if softmax_scale is not None else head_dim**-0.5) * LOG2E
    grid = (triton.cdiv(max_query_len, block_q), num_seqs, num_kv_heads)
    _prefill_attention_kernel[grid](
        out,
        q,
        k_cache,
        v_cache,
        k_scale,
        v_scale,
        block_tables,
        query_start,
        context_lens,
        scale,
        sliding_window or 0,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        *strides,
        *(k_scale.stride()[:3] if is_fp8 else (0, 0, 0)),
        block_tables.stride(0),
        QUERIES_PER_KV=queries_per_kv,
        GROUP_PAD=group_pad,
        BLOCK_Q=block_q,
        HEAD_DIM=head_dim,
        HEAD_DIM_PAD=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_SIZE=kv_cache.shape[2],
        BLOCK_N=config.block_n,
        HAS_WINDOW=sliding_window is not None,
        IS_FP8=is_fp8,
        UPCAST_DOT=is_interpreted(_prefill_attention_kernel),
        DOT_PRECISION=dot_precision(q.dtype),
        WORDS=words,
        # Inline PTX needs a compiled kernel (not the interpreter) and sm_89+ for its cvt: PDL's Hopper test.
        PTX_CONVERT=words and pdl_supported(_prefill_attention_kernel, q.device),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out


def _check_config(config: PrefillConfig, sliding_window, what: str) -> None:
    for name in ("block_m", "block_n"):
        value = getattr(config, name)
        if value < 16 or value & (value - 1):
            raise ValueError(f"{what}: config.{name} must be a power of two >= 16, got {value}")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"{what}: sliding_window must be >= 1 or None, got {sliding_window}")


def _check_arguments(q, kv_cache, block_tables, query_start, context_lens, kv_scales, what: str) -> None:
    check_query_and_cache(q, kv_cache, kv_scales, "num_tokens", what)
    num_seqs = context_lens.shape[0] if context_lens.dim() == 1 else -1
    check_sequence_tables(block_tables, context_lens, num_seqs, what)
    if query_start.dtype != torch.int32 or query_start.shape != (num_seqs + 1,):
        raise ValueError(
            f"{what}: query_start must be int32 [num_seqs + 1 = {num_seqs + 1}], "
            f"got {query_start.dtype} {tuple(query_start.shape)}"
        )
    if query_start.stride(0) != 1:
        raise ValueError(f"{what}: query_start must be contiguous, got stride {query_start.stride()}")


def prefill_attention_reference(
    q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32
    query_start: torch.Tensor,  # [num_seqs + 1] int32
    context_lens: torch.Tensor,  # [num_seqs] int32
    *,
    kv_scales: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:  # [num_tokens, num_heads, head_dim] q's dtype
    """Plain torch, one sequence at a time: gather (dequantize) its keys, causal masked softmax in fp32."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    group = num_heads // num_kv_heads
    scale = softmax_scale if softmax_scale is not None else head_dim**-0.5
    out = torch.zeros_like(q)
    starts = [int(s) for s in query_start.tolist()]
    for index, context_len in enumerate(int(n) for n in context_lens.tolist()):
        begin, end = starts[index], starts[index + 1]
        if begin == end:
            continue
        keys, values = gather_kv_reference(kv_cache, kv_scales, block_tables[index], context_len)
        num_queries = end - begin
        grouped_q = q[begin:end].float().view(num_queries, num_kv_heads, group, head_dim)
        scores = torch.einsum("qkgd,tkd->kgqt", grouped_q, keys) * scale  # t: key position
        query_positions = torch.arange(context_len - num_queries, context_len, device=q.device)[:, None]
        key_positions = torch.arange(context_len, device=q.device)[None, :]
        visible = key_positions <= query_positions  # [num_queries, context_len]
        if sliding_window is not None:
            visible &= key_positions > query_positions - sliding_window
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        attended = torch.einsum("kgqt,tkd->qkgd", probs, values)
        out[begin:end] = attended.reshape(num_queries, num_heads, head_dim).to(q.dtype)
    return out
