"""What the paged decode and prefill attention kernels share: the KV tile step and argument checks."""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import FP8_DTYPE, tl, triton
from modelgate.kernels.reshape_and_cache import check_kv_cache

QUERY_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
LOG2E = 1.4426950408889634


@triton.jit
def causal_visible(positions, in_context, query_positions, sliding_window, HAS_WINDOW: tl.constexpr):
    """[M, BLOCK_N]: which keys (positions, those in_context) each query row (at query_positions) sees: itself and
    those before it, and with HAS_WINDOW only the last sliding_window of them."""
    visible = in_context[None, :] & (positions[None, :] <= query_positions[:, None])
    if HAS_WINDOW:
        visible = visible & (positions[None, :] > query_positions[:, None] - sliding_window)
    return visible


@triton.jit
def attention_dot(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """tl.dot in fp32 accumulation; UPCAST multiplies in fp32 (the interpreter's bf16 dot is broken)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def attend_kv_tile(
    q,  # [M, HEAD_DIM_PAD] queries (pre-scaling), q's dtype
    m,  # [M] float32 running max of the scaled scores (log2 domain), -inf before any key
    l,  # [M] float32 running sum of exp2(score - m)
    acc,  # [M, HEAD_DIM_PAD] float32 running sum of exp2(score - m) * v
    k_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] keys
    v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] values
    k_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 (IS_FP8)
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 (IS_FP8)
    block_table_ptr,  # this sequence's row of block_tables (int32)
    positions,  # [BLOCK_N] int32 key positions of the tile
    in_context,  # [BLOCK_N] bool: position < context length (what may be loaded)
    visible,  # [M, BLOCK_N] or [1, BLOCK_N] bool: which (query, key) pairs count
    kv_head,  # the KV head
    block_size,  # tokens per cache block
    qk_scale,  # softmax scale * log2(e)
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    IS_FP8: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One online-softmax step over a tile of keys; returns the updated (m, l, acc)."""
    blocks = tl.load(block_table_ptr + positions // block_size, mask=in_context, other=0).to(tl.int64)
    in_block = (positions % block_size).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM_PAD)
    token_offsets = blocks * stride_cache_block + in_block * stride_cache_slot + kv_head * stride_cache_head
    kv_offsets = token_offsets[:, None] + dims[None, :]
    kv_mask = in_context[:, None] & (dims < HEAD_DIM)[None, :]
    k = tl.load(k_cache_ptr + kv_offsets, mask=kv_mask, other=0.0)
    v = tl.load(v_cache_ptr + kv_offsets, mask=kv_mask, other=0.0)
    scores = attention_dot(q, tl.trans(k.to(q.dtype)), UPCAST_DOT, DOT_PRECISION)  # [M, BLOCK_N]
    if IS_FP8:
        scale_offsets = blocks * stride_scale_block + in_block * stride_scale_slot + kv_head * stride_scale_head
        k_scale = tl.load(k_scale_ptr + scale_offsets, mask=in_context, other=0.0)
        v_scale = tl.load(v_scale_ptr + scale_offsets, mask=in_context, other=0.0)
        scores = scores * (k_scale * qk_scale)[None, :]
    else:
        scores = scores * qk_scale
    scores = tl.where(visible, scores, float("-inf"))
    m_new = tl.maximum(m, tl.max(scores, axis=1))
    # A row with no visible key yet keeps m = -inf; subtracting 0 instead keeps its p and alpha at 0, not NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(scores - m_safe[:, None])
    l = l * alpha + tl.sum(p, axis=1)
    if IS_FP8:
        p = p * v_scale[None, :]
    acc = acc * alpha[:, None] + attention_dot(p.to(q.dtype), v.to(q.dtype), UPCAST_DOT, DOT_PRECISION)
    return m_new, l, acc


def dot_precision(dtype: torch.dtype) -> str | None:
    # fp32 operands: exact fp32 products (the GPU default would be tf32); 16-bit operands take the default.
    return "ieee" if dtype == torch.float32 else None


def checked_output(out: torch.Tensor | None, q: torch.Tensor, what: str) -> torch.Tensor:
    if out is None:
        return torch.empty_like(q, memory_format=torch.contiguous_format)
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(
            f"{what}: out must be {q.dtype} {tuple(q.shape)} on {q.device}, got {out.dtype} "
            f"{tuple(out.shape)} on {out.device}"
        )
    if q.shape[2] > 1 and out.stride(2) != 1:
        raise ValueError(f"{what}: out needs a contiguous head_dim (stride 1), got strides {out.stride()}")
    return out


def check_sequence_tables(block_tables: torch.Tensor, context_lens: torch.Tensor, num_seqs: int, what: str) -> None:
    """Raise ValueError unless block_tables is int32 [num_seqs, max_blocks] and context_lens int32 [num_seqs]."""
    if block_tables.dtype != torch.int32 or block_tables.dim() != 2 or block_tables.shape[0] != num_seqs:
        raise ValueError(
            f"{what}: block_tables must be int32 [num_seqs={num_seqs}, max_blocks], "
            f"got {block_tables.dtype} {tuple(block_tables.shape)}"
        )
    if block_tables.shape[1] > 1 and block_tables.stride(1) != 1:
        raise ValueError(f"{what}: block_tables rows must be contiguous, got strides {block_tables.stride()}")
    if context_lens.dtype != torch.int32 or context_lens.shape != (num_seqs,):
        raise ValueError(
            f"{what}: context_lens must be int32 [num_seqs={num_seqs}], "
            f"got {context_lens.dtype} {tuple(context_lens.shape)}"
        )
    if num_seqs > 1 and context_lens.stride(0) != 1:
        raise ValueError(f"{what}: context_lens must be contiguous, got stride {context_lens.stride()}")


def check_query_and_cache(q, kv_cache, kv_scales, rows: str, what: str) -> tuple[int, int]:
    """Raise ValueError unless q is [rows, num_heads, head_dim] of a float dtype, with a paged cache of q's
    dtype (or FP8 with scales) whose KV heads divide the query heads; returns (num_heads, head_dim)."""
    if q.dim() != 3:
        raise ValueError(f"{what}: q must be [{rows}, num_heads, head_dim], got {tuple(q.shape)}")
    if q.dtype not in QUERY_DTYPES:
        raise ValueError(f"{what}: q must be bfloat16, float16 or float32, got {q.dtype}")
    num_heads, head_dim = q.shape[1], q.shape[2]
    if kv_cache.dim() == 5 and kv_cache.dtype not in (q.dtype, FP8_DTYPE):
        raise ValueError(f"{what}: kv_cache must be {q.dtype} (q's dtype) or float8_e4m3fn, got {kv_cache.dtype}")
    num_kv_heads = kv_cache.shape[3] if kv_cache.dim() == 5 else 0
    check_kv_cache(kv_cache, kv_scales, what, num_kv_heads=num_kv_heads, head_dim=head_dim)
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise ValueError(f"{what}: num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    if head_dim > 1 and q.stride(2) != 1:
        raise ValueError(f"{what}: q needs a contiguous head_dim (stride 1), got strides {q.stride()}")
    return num_heads, head_dim
