"""Decode attention over the paged KV cache: one query token per sequence (flash-decoding).

q [num_seqs, num_heads, head_dim] attends to the first context_lens[i] tokens of sequence i's cache (its own
K/V included: reshape_and_cache wrote them first), through block_tables. Query head h reads KV head
h // (num_heads // num_kv_heads), as torch's enable_gqa does.

- GQA grouping: a program owns one (sequence, KV head) and all the query heads that share it, stacked as the M
  rows of tl.dot (padded to 16), so every K/V tile is read from memory once per group, not once per query head.
- KV tiles of BLOCK_N tokens are gathered token by token through the block table, so BLOCK_N does not depend
  on the cache's block_size (16, 8, or any other).
- Split-KV: the context may be cut into num_partitions partitions, one program each, whose (max, sum,
  unnormalized output) are combined as in flash-decoding. Each sequence cuts its own context evenly (whole
  tiles, at most split.partition_size tokens per partition), so short sequences use every partition too.
  `plan_decode_split` picks it when (sequences x KV heads) alone would leave the GPU's SMs short of programs;
  otherwise one pass writes the output directly. A caller that captures CUDA graphs passes a fixed
  `DecodeSplit` (from max_model_len).
- The partitions are combined in the same launch, not by a second kernel (a ~2.5 us launch per layer at batch
  1): every partition program of a (sequence, KV head), empty ones included, stores its partials (empty ones
  store none) and increments that pair's int32 counter; the program that sees num_partitions - 1 combines the
  non-empty partitions in order 0, 1, ... (the same bits whichever program came last), writes the output rows
  of the group's query heads and sets the counter back to 0 (kernels/split_counters.py, as kernels/fp8_gemv.py).
- FP8 KV (see kernels/reshape_and_cache.py): tiles are converted to q's dtype in registers; the per-token K
  scale multiplies the score column, the V scale the probability column. With head_dim a power of two >= 64
  the cache is read as int32 words, a quarter of the head dims per byte (kernels/fp8_kv_words.py).
- Sliding window: the query (position context_len - 1) sees keys at positions > context_len - 1 - window.
- Softmax in float32 with exp2 (scores carry softmax_scale * log2(e)); K/V cache offsets in int64.

`paged_decode_attention_reference` is the plain-torch version (gather, dequantize, masked softmax in fp32); the
tile update (`attend_kv_tile`) and the argument checks live in kernels/paged_attention_common.py.
"""

from __future__ import annotations

import torch

from modelgate.kernels.decode_combine import combine_block, combine_partitions, sequence_partitions, split_partials
from modelgate.kernels.decode_split import (  # noqa: F401  (re-exported: the split API is part of this kernel's)
    DEFAULT_NUM_SMS,
    MIN_PARTITION_SIZE,
    SINGLE_PASS,
    TARGET_PROGRAMS_PER_SM,
    DecodeConfig,
    DecodeSplit,
    check_split,
    default_decode_config,
    num_sms,
    plan_decode_split,
)
from modelgate.kernels.fp8_kv_words import (
    as_words,
    attend_fp8_words_range,
    load_quarters,
    packed_fp8_ok,
    store_normalized_quarters,
    store_quarters,
)
from modelgate.kernels.fp8_quant import FP8_DTYPE, check_launchable, is_interpreted, tl, triton
from modelgate.kernels.grid_dependency import allow_dependents_to_launch, pdl_supported, wait_for_previous_kernel
from modelgate.kernels.paged_attention_common import (
    LOG2E,
    attend_kv_tile,
    check_query_and_cache,
    check_sequence_tables,
    checked_output,
    dot_precision,
)
from modelgate.kernels.paged_decode_reference import paged_decode_attention_reference  # noqa: F401  (re-exported)
from modelgate.kernels.split_counters import split_counters

# Owner of the split launches' counters (kernels/split_counters.py): one per (sequence, KV head).
COUNTER_OWNER = "paged_decode_attention"


# Index tensors start anywhere in the engine's packed transfer: see _prefill_attention_kernel's note.
@triton.jit(
    do_not_specialize=["stride_table_seq"], do_not_specialize_on_alignment=["block_tables_ptr", "context_lens_ptr"]
)
def _paged_decode_kernel(
    out_ptr,  # [num_seqs, num_heads, head_dim] output (single pass), head_dim stride 1
    partial_acc_ptr,  # [num_seqs, num_heads, num_partitions, HEAD_DIM_PAD] float32 (SPLIT), contiguous
    partial_max_ptr,  # [num_seqs, num_heads, num_partitions] float32 (SPLIT): max score, log2 domain
    partial_sum_ptr,  # [num_seqs, num_heads, num_partitions] float32 (SPLIT): sum of exp2(score - max)
    counters_ptr,  # [>= num_seqs * num_kv_heads] int32, 0 at launch; left 0 (SPLIT)
    q_ptr,  # [num_seqs, num_heads, head_dim] queries, head_dim stride 1
    k_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[0]
    v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[1]
    k_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[0] (IS_FP8)
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[1] (IS_FP8)
    block_tables_ptr,  # [num_seqs, max_blocks] int32
    context_lens_ptr,  # [num_seqs] int32: tokens in the cache, the query's own included
    qk_scale,  # softmax scale * log2(e)
    sliding_window,  # keys the query sees, itself included (HAS_WINDOW)
    partition_size,  # tokens per partition: a multiple of BLOCK_N (single pass: >= any context)
    num_heads,  # query heads
    num_partitions,  # programs along axis 2
    stride_q_seq,
    stride_q_head,
    stride_out_seq,
    stride_out_head,
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,
    stride_table_seq,
    QUERIES_PER_KV: tl.constexpr,  # query heads per KV head
    GROUP_PAD: tl.constexpr,  # QUERIES_PER_KV padded to a power of two >= 16 (tl.dot's M)
    GROUP_POW2: tl.constexpr,  # QUERIES_PER_KV rounded up to a power of two (the combine's rows)
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,  # HEAD_DIM rounded up to a power of two >= 16
    # Tokens per cache block: a constant, so the tiles' block/slot split is shifts, not integer divisions.
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per tile
    HAS_WINDOW: tl.constexpr,
    IS_FP8: tl.constexpr,
    SPLIT: tl.constexpr,  # write partials; the last program of the (sequence, KV head) combines them
    COMBINE_BLOCK: tl.constexpr,  # partitions the combining program reads per step (SPLIT)
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    WORDS: tl.constexpr = False,  # FP8 cache read as int32 words (kernels/fp8_kv_words.py); caches are word views
    HALF_DOTS: tl.constexpr = False,  # WORDS: dots in fp16, the query pre-scaled by qk_scale (DecodeConfig.half_dots)
    PTX_CONVERT: tl.constexpr = False,  # HALF_DOTS: tiles converted by inline PTX (DecodeConfig.ptx_convert)
    # Hopper PDL: wait for the KV write before reading; the next kernel (o_proj) may launch at once and read its
    # weights during this latency-bound one (letting it in after the KV tiles, or at the end, measured slower).
    PDL: tl.constexpr = False,
):
    allow_dependents_to_launch(PDL)
    wait_for_previous_kernel(PDL)
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    partition = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    window_start = 0
    if HAS_WINDOW:
        window_start = tl.maximum(context_len - sliding_window, 0)
    first_key, size = sequence_partitions(context_len, window_start, partition_size, num_partitions, BLOCK_N)
    start = first_key + partition * size
    end = tl.minimum(start + size, context_len)
    groups = tl.arange(0, GROUP_PAD)
    dims = tl.arange(0, HEAD_DIM_PAD)
    heads = kv_head * QUERIES_PER_KV + groups
    group_mask = groups < QUERIES_PER_KV
    row_mask = group_mask[:, None] & (dims < HEAD_DIM)[None, :]
    seq64 = seq.to(tl.int64)
    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l = tl.zeros([GROUP_PAD], tl.float32)
    block_table_ptr = block_tables_ptr + seq64 * stride_table_seq
    q_rows = seq64 * stride_q_seq + heads[:, None] * stride_q_head
    if WORDS:
        quarter4 = 4 * tl.arange(0, HEAD_DIM // 4)[None, :]  # dims 4c of each quarter
        q0, q1, q2, q3 = load_quarters(q_ptr, q_rows + quarter4, group_mask[:, None], 1, 0.0)
        tile_qk_scale = qk_scale
        if HALF_DOTS:
            q0, q1 = (q0.to(tl.float32) * qk_scale).to(tl.float16), (q1.to(tl.float32) * qk_scale).to(tl.float16)
            q2, q3 = (q2.to(tl.float32) * qk_scale).to(tl.float16), (q3.to(tl.float32) * qk_scale).to(tl.float16)
            tile_qk_scale = 1.0
        acc0 = tl.zeros([GROUP_PAD, HEAD_DIM // 4], tl.float32)
        acc1 = tl.zeros([GROUP_PAD, HEAD_DIM // 4], tl.float32)
        acc2 = tl.zeros([GROUP_PAD, HEAD_DIM // 4], tl.float32)
        acc3 = tl.zeros([GROUP_PAD, HEAD_DIM // 4], tl.float32)
    else:
        q = tl.load(q_ptr + q_rows + dims[None, :], mask=row_mask, other=0.0)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    if WORDS:
        m, l, acc0, acc1, acc2, acc3 = attend_fp8_words_range(
            q0, q1, q2, q3, m, l, acc0, acc1, acc2, acc3, k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr,
            block_table_ptr, start, end, window_start, kv_head, BLOCK_SIZE, tile_qk_scale, stride_cache_block,
            stride_cache_slot, stride_cache_head, stride_scale_block, stride_scale_slot, stride_scale_head,
            HEAD_DIM // 4, BLOCK_N, UPCAST_DOT, DOT_PRECISION, PTX_CONVERT,
        )  # fmt: skip
    else:
        for tile_start in range(start, end, BLOCK_N):
            positions = tile_start + tl.arange(0, BLOCK_N)
            in_context = positions < context_len
            m, l, acc = attend_kv_tile(
                q, m, l, acc, k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr, block_table_ptr, positions,
                in_context, (in_context & (positions >= window_start))[None, :], kv_head, BLOCK_SIZE, qk_scale,
                stride_cache_block, stride_cache_slot, stride_cache_head, stride_scale_block, stride_scale_slot,
                stride_scale_head, HEAD_DIM, HEAD_DIM_PAD, IS_FP8, UPCAST_DOT, DOT_PRECISION,
            )  # fmt: skip
    if SPLIT:
        # An empty partition (start >= end: its tile loop did not run) stores nothing, as the combine reads
        # only partitions 0..last-1 (the non-empty ones), but it still counts in below.
        if start < end:
            rows = (seq64 * num_heads + heads) * num_partitions + partition  # [GROUP_PAD]
            tl.store(partial_max_ptr + rows, m, mask=group_mask)
            tl.store(partial_sum_ptr + rows, l, mask=group_mask)
            acc_rows = partial_acc_ptr + rows[:, None] * HEAD_DIM_PAD
            if WORDS:
                store_quarters(acc_rows + quarter4, acc0, acc1, acc2, acc3, group_mask[:, None])
            else:
                tl.store(acc_rows + dims[None, :], acc, mask=row_mask)
        # Every thread's partial stores must happen before the counter increment, which Triton issues from one
        # thread for the program: the barrier orders them within the program; the increment's release (acq_rel,
        # gpu scope) publishes them to the program that sees the last count, whose acquire (then the barrier
        # that broadcasts the count) orders its reads of the partials after them.
        tl.debug_barrier()
        counter_ptr = counters_ptr + seq64 * tl.num_programs(1) + kv_head
        count = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
        if count == num_partitions - 1:  # all others have stored theirs (the interpreter: the last program)
            # The partitions that hold a visible key: 0..last-1 (partitions are consecutive runs of keys).
            last = tl.minimum(tl.cdiv(context_len - first_key, size), num_partitions)
            combine_partitions(
                out_ptr,
                partial_acc_ptr,
                partial_max_ptr,
                partial_sum_ptr,
                seq64,
                kv_head,
                last,
                num_heads,
                num_partitions,
                stride_out_seq,
                stride_out_head,
                QUERIES_PER_KV,
                GROUP_POW2,
                HEAD_DIM,
                HEAD_DIM_PAD,
                COMBINE_BLOCK,
            )
            # All num_partitions programs have counted: nobody touches this counter again in this launch, and
            # the next launch (or CUDA-graph replay) starts from 0.
            tl.store(counter_ptr, 0)
    else:
        # l == 0 only for an empty context (a padded batch row): its output is 0.
        inverse = 1.0 / tl.where(l == 0.0, 1.0, l)[:, None]
        out_rows = out_ptr + seq64 * stride_out_seq + heads[:, None] * stride_out_head
        if WORDS:
            store_normalized_quarters(out_rows + quarter4, acc0, acc1, acc2, acc3, inverse, group_mask[:, None])
        else:
            tl.store(out_rows + dims[None, :], (acc * inverse).to(out_ptr.dtype.element_ty), mask=row_mask)


def paged_decode_attention(
    q: torch.Tensor,  # [num_seqs, num_heads, head_dim] bf16/fp16/fp32
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim] q's dtype or float8_e4m3fn
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor,  # [num_seqs] int32, 0 <= context_lens[i] <= max_context_len
    max_context_len: int,  # host-side upper bound of context_lens (sizes the split grid)
    *,
    kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32 (FP8 cache)
    softmax_scale: float | None = None,  # default head_dim ** -0.5
    sliding_window: int | None = None,  # keys the query sees, itself included
    split: DecodeSplit | None = None,  # default plan_decode_split(...)
    config: DecodeConfig | None = None,  # default default_decode_config(head_dim, programs, SMs)
    out: torch.Tensor | None = None,  # [num_seqs, num_heads, head_dim] q's dtype, head_dim stride 1
) -> torch.Tensor:  # [num_seqs, num_heads, head_dim] q's dtype
    """Attention of each sequence's single query over its cached context.

    Invariants: context_lens[i] <= max_context_len (a split launch ignores keys past
    split.num_partitions * split.partition_size, which must cover max_context_len); block_tables[i] holds
    ceil(context_lens[i] / block_size) valid blocks; a sequence with context_len 0 gets zeros. The cache must
    already hold the query token's own K/V (reshape_and_cache first). Raises ValueError on a shape, dtype,
    stride or device mismatch, or a split that does not cover max_context_len.

    A split launch (num_partitions > 1) is one kernel: it uses this device's counters (COUNTER_OWNER in
    kernels/split_counters.py, one per sequence x KV head), so split calls run on one stream, one after
    another, and the first split call with the most sequences runs before any CUDA-graph capture (one made
    during a capture that would need a larger buffer raises RuntimeError). Deterministic: the same inputs give
    the same bits whichever partition program finishes last.
    """
    what = "paged_decode_attention"
    num_seqs, num_heads, head_dim = _check_arguments(q, kv_cache, block_tables, context_lens, kv_scales, what)
    check_launchable(_paged_decode_kernel, what, q, kv_cache, block_tables, context_lens)
    num_kv_heads = kv_cache.shape[3]
    is_fp8 = kv_cache.dtype == FP8_DTYPE
    config = config or default_decode_config(head_dim, num_seqs * num_kv_heads, num_sms(q.device))
    if split is None:
        split = plan_decode_split(num_seqs, num_kv_heads, max_context_len, config.block_n, num_sms(q.device))
    check_split(split, config, max_context_len, sliding_window, what)
    out = checked_output(out, q, what)
    if num_seqs == 0:
        return out
    queries_per_kv = num_heads // num_kv_heads
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    is_split = split.num_partitions > 1
    # A single pass treats the whole context as partition 0.
    partition_size = split.partition_size if is_split else block_tables.shape[1] * kv_cache.shape[2] + config.block_n
    partials = split_partials(num_seqs, num_heads, split.num_partitions if is_split else 1, head_dim_pad, q.device)
    counters = split_counters(COUNTER_OWNER, q.device, num_seqs * num_kv_heads) if is_split else context_lens
    group_pow2 = triton.next_power_of_2(queries_per_kv)
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    k_scale, v_scale = (kv_scales[0], kv_scales[1]) if is_fp8 else (k_cache, v_cache)
    words = packed_fp8_ok(kv_cache, head_dim) and config.words
    if words:
        k_cache, v_cache = as_words(k_cache), as_words(v_cache)
    scale = (softmax_scale if softmax_scale is not None else head_dim**-0.5) * LOG2E
    grid = (num_seqs, num_kv_heads, split.num_partitions)
    _paged_decode_kernel[grid](
        out,
        *partials,
        counters,
        q,
        k_cache,
        v_cache,
        k_scale,
        v_scale,
        block_tables,
        context_lens,
        scale,
        sliding_window or 0,
        partition_size,
        num_heads,
        split.num_partitions,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        *(k_scale.stride()[:3] if is_fp8 else (0, 0, 0)),
        block_tables.stride(0),
        QUERIES_PER_KV=queries_per_kv,
        GROUP_PAD=max(16, group_pow2),
        GROUP_POW2=group_pow2,
        HEAD_DIM=head_dim,
        HEAD_DIM_PAD=head_dim_pad,
        BLOCK_SIZE=kv_cache.shape[2],
        BLOCK_N=config.block_n,
        HAS_WINDOW=sliding_window is not None,
        IS_FP8=is_fp8,
        SPLIT=is_split,
        COMBINE_BLOCK=combine_block(split.num_partitions, group_pow2, head_dim_pad),
        UPCAST_DOT=is_interpreted(_paged_decode_kernel),
        DOT_PRECISION=dot_precision(q.dtype),
        WORDS=words,
        HALF_DOTS=words and config.half_dots,
        # Inline PTX needs a compiled kernel (not the interpreter) and sm_89+ for its cvt: PDL's Hopper test.
        PTX_CONVERT=words and config.half_dots and config.ptx_convert and pdl_supported(_paged_decode_kernel, q.device),
        PDL=pdl_supported(_paged_decode_kernel, q.device),
        launch_pdl=pdl_supported(_paged_decode_kernel, q.device),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out


def _check_arguments(q, kv_cache, block_tables, context_lens, kv_scales, what: str) -> tuple[int, int, int]:
    num_heads, head_dim = check_query_and_cache(q, kv_cache, kv_scales, "num_seqs", what)
    num_seqs = q.shape[0]
    check_sequence_tables(block_tables, context_lens, num_seqs, what)
    return num_seqs, num_heads, head_dim
