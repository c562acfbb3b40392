"""A decode step's own token inside decode attention: its rotary embedding and KV write fused into the kernel.

At one new token per sequence, `paged_decode_attention(..., fresh=FreshToken(...))` takes the unrotated q, k and
v of the qkv projection and does what `rotary_reshape_and_cache` would have done before it:
- every program rotates its query heads as it loads them (GPT-NeoX halves at positions[seq], the math of
  kernels/rotary_embedding.py, rounded to q's dtype as the in-place rotation stores it); q is not modified;
- the tile loops read keys 0 .. context_len - 2 from the cache; the program whose partition holds the fresh
  token (position context_len - 1) adds it from registers after its loop (`attend_fresh_token`): the rotated
  key and the value as the cache will hold them (the FP8 round trip included), one more online-softmax step;
- that program then writes them into the cache at slot_mapping[seq] for the later steps (`write_fresh_kv`,
  through `cache_rotated_kv`, the helper of kernels/rotary_reshape_and_cache.py: the same bytes and scales).
  Nothing in this launch reads them back, so no program waits for the store.

Why: at batch 1 the separate rotary + KV write was a dependent ~3 us launch per layer between the qkv GEMV
and the attention on an H100.

Bits: the cache and the rotated q equal those of the unfused kernels exactly; the rotation's products are
rounded on their own (rotary_embedding.rounded_product), although this kernel is compiled with mul-add
contraction and the rotary kernels without. The fresh key's score is a sum in another order than the tile's
tl.dot, so the output may differ from the unfused launches' in its last bits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kernels.fp8_kv_words import load_quarters
from kernels.fp8_quant import tl, to_e4m3, to_output, triton
from kernels.reshape_and_cache import check_write_arguments, fp8_head_scales
from kernels.rotary_embedding import check_rotary_arguments, rounded_product
from kernels.rotary_reshape_and_cache import cache_rotated_kv


class FreshToken(NamedTuple):
    """The step's token of each sequence, for paged_decode_attention to rotate and cache itself."""

    key: torch.Tensor  # [num_seqs, num_kv_heads, head_dim] unrotated keys (q's dtype), head_dim stride 1
    value: torch.Tensor  # [num_seqs, num_kv_heads, head_dim] values, head_dim stride 1
    slot_mapping: torch.Tensor  # [num_seqs] int64 cache slot of each sequence's token; < 0: not written
    positions: torch.Tensor  # [num_seqs] int64 position of each sequence's token (context_len - 1)
    cos: torch.Tensor  # [max_positions, head_dim // 2] float32
    sin: torch.Tensor  # [max_positions, head_dim // 2] float32


def check_fresh_token(fresh: FreshToken, q: torch.Tensor, kv_cache: torch.Tensor, kv_scales, what: str) -> None:
    """ValueError naming the argument unless `fresh` fits q (its rotation) and the cache (its KV write)."""
    check_rotary_arguments(q, fresh.key, fresh.positions, fresh.cos, fresh.sin, what)
    check_write_arguments(fresh.key, fresh.value, kv_cache, fresh.slot_mapping, kv_scales, what)
    if fresh.key.shape[0] != q.shape[0]:
        raise ValueError(f"{what}: fresh.key must have one row per sequence ({q.shape[0]}), got {fresh.key.shape[0]}")


def fresh_token_arguments(fresh: FreshToken | None, kv_cache: torch.Tensor) -> tuple:
    """The kernel's fresh-token pointer and stride arguments, in its order (placeholders when fresh is None)."""
    if fresh is None:
        placeholder = kv_cache[0]
        return (placeholder,) * 8 + (0,) * 8
    k_cache = kv_cache[0]
    return (
        fresh.key, fresh.value, k_cache, kv_cache[1], fresh.slot_mapping, fresh.positions, fresh.cos, fresh.sin,
        fresh.key.stride(0), fresh.key.stride(1), fresh.value.stride(0), fresh.value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), fresh.cos.stride(0),
    )


@triton.jit
def load_rotated(ptr, offsets, dims, mask, cos_row_ptr, sin_row_ptr, HALF: tl.constexpr,
                 ROUND_IN_FP32: tl.constexpr):
    """Head vectors at ptr + offsets, rotated, in ptr's dtype; `dims` (broadcast against offsets) are the head
    dims the offsets address, so any layout works (whole rows, or the quarters of kernels/fp8_kv_words.py).

    Dim d < HALF pairs with d + HALF: x1' = x1 c - x2 s, x2' = x2 c + x1 s, the bits of
    rotary_embedding.rotated_halves. ROUND_IN_FP32 is set exactly under the interpreter."""
    first = dims < HALF
    x = tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    partner = tl.load(ptr + offsets + tl.where(first, HALF, -HALF), mask=mask, other=0.0).to(tl.float32)
    pair = tl.where(first, dims, dims - HALF)
    cos = tl.load(cos_row_ptr + pair, mask=pair < HALF, other=0.0)
    sin = tl.load(sin_row_ptr + pair, mask=pair < HALF, other=0.0)
    x_cos = rounded_product(x, cos, ROUND_IN_FP32)
    partner_sin = rounded_product(partner, sin, ROUND_IN_FP32)
    rotated = tl.where(first, x_cos - partner_sin, x_cos + partner_sin)
    return to_output(rotated, ptr.dtype.element_ty, ROUND_IN_FP32)


@triton.jit
def write_fresh_kv(
    key_ptr, value_ptr,  # FreshToken.key / .value
    k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr,  # kv_cache[i] as elements, kv_scales[i] (IS_FP8)
    seq64, kv_head, slot,  # the sequence (int64), its KV head, the token's cache slot (>= 0)
    block_size, cos_row_ptr, sin_row_ptr,  # cos / sin at the token's position
    stride_key_seq, stride_key_head, stride_value_seq, stride_value_head,
    stride_cache_block, stride_cache_slot, stride_cache_head,
    stride_scale_block, stride_scale_slot, stride_scale_head,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, IS_FP8: tl.constexpr, FP8_MAX: tl.constexpr,
    MIN_SCALE: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Rotate the token's key of one KV head and write it and its value to the cache slot (one head's row of
    what rotary_reshape_and_cache writes)."""
    dims = tl.arange(0, HALF_PAD)
    dim_mask = dims < HALF
    heads = kv_head + tl.arange(0, 1)
    head_mask = heads >= 0
    mask = head_mask[:, None] & dim_mask[None, :]
    cos = tl.load(cos_row_ptr + dims, mask=dim_mask, other=0.0)[None, :]
    sin = tl.load(sin_row_ptr + dims, mask=dim_mask, other=0.0)[None, :]
    block = slot.to(tl.int64) // block_size
    offset = slot.to(tl.int64) % block_size
    key_first = seq64 * stride_key_seq + heads[:, None] * stride_key_head + dims[None, :]
    value_first = seq64 * stride_value_seq + heads[:, None] * stride_value_head + dims[None, :]
    cache_first = block * stride_cache_block + offset * stride_cache_slot + heads[:, None] * stride_cache_head
    scale_offsets = block * stride_scale_block + offset * stride_scale_slot + heads * stride_scale_head
    cache_rotated_kv(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, k_scale_ptr, v_scale_ptr, key_first, value_first,
                     cache_first + dims[None, :], scale_offsets, mask, head_mask, cos, sin,
                     HALF, IS_FP8, FP8_MAX, MIN_SCALE, ROUND_IN_FP32)


@triton.jit
def _stored(x, scale, OUT_TY: tl.constexpr, IS_FP8: tl.constexpr, FP8_MAX: tl.constexpr,
            ROUND_IN_FP32: tl.constexpr):
    """Part of a head vector (its cache dtype's source, q's dtype) as the attention reads it back from the cache,
    in OUT_TY: the e4m3 value (its scale applied separately) for an FP8 cache, else x itself."""
    if IS_FP8:
        return to_e4m3(tl.div_rn(x.to(tl.float32), scale), FP8_MAX, ROUND_IN_FP32).to(OUT_TY)
    return x.to(OUT_TY)


@triton.jit
def _head_scale(amax, IS_FP8: tl.constexpr, FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr):
    """The cache's scale of a head vector with this amax (1 for a cache that is not FP8)."""
    if IS_FP8:
        return fp8_head_scales(amax, FP8_MAX, MIN_SCALE)
    return 1.0


@triton.jit
def _abs_max(x):
    return tl.max(tl.max(tl.abs(x.to(tl.float32)), axis=1), axis=0)


@triton.jit
def _dot_rows(q, k):
    """[M] float32: q [M, D] . k [1, D] per row."""
    return tl.sum(q.to(tl.float32) * k.to(tl.float32), axis=1)


@triton.jit
def _value_update(acc, alpha, weight, v):
    """acc * alpha + weight v: the P.V step of one key (weight [M] rounded as the tile path rounds P)."""
    return acc * alpha[:, None] + weight.to(tl.float32)[:, None] * v.to(tl.float32)


@triton.jit
def attend_fresh_token(
    q, m, l, acc,  # [M, HEAD_DIM_PAD] rotated queries; running max, sum, output, as attend_kv_tile's
    key_ptr, value_ptr, key_row, value_row,  # FreshToken.key / .value and the token's head offsets in them
    cos_row_ptr, sin_row_ptr, qk_scale,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, IS_FP8: tl.constexpr, FP8_MAX: tl.constexpr,
    MIN_SCALE: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """The online-softmax step of the fresh token's key (always visible) from registers: its rotated K and V
    as the cache will hold them (FP8 round trip included), so the tile loop need not wait for their store."""
    dims = tl.arange(0, HEAD_DIM_PAD)[None, :]
    mask = dims < HEAD_DIM
    k = load_rotated(key_ptr, key_row + dims, dims, mask, cos_row_ptr, sin_row_ptr, HEAD_DIM // 2, ROUND_IN_FP32)
    v = tl.load(value_ptr + value_row + dims, mask=mask, other=0.0)
    k_scale = _head_scale(_abs_max(k), IS_FP8, FP8_MAX, MIN_SCALE)
    v_scale = _head_scale(_abs_max(v), IS_FP8, FP8_MAX, MIN_SCALE)
    ty = q.dtype
    score = _dot_rows(q, _stored(k, k_scale, ty, IS_FP8, FP8_MAX, ROUND_IN_FP32)) * (k_scale * qk_scale)
    m_new = tl.maximum(m, score)
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(score - m_new)
    weight = (p * v_scale).to(ty)
    acc = _value_update(acc, alpha, weight, _stored(v, v_scale, ty, IS_FP8, FP8_MAX, ROUND_IN_FP32))
    return m_new, l * alpha + p, acc


@triton.jit
def attend_fresh_token_quarters(
    q0, q1, q2, q3, m, l, acc0, acc1, acc2, acc3,  # the quarters of kernels/fp8_kv_words.py (FP8 cache)
    key_ptr, value_ptr, key_row, value_row, cos_row_ptr, sin_row_ptr, qk_scale,
    HEAD_DIM: tl.constexpr, FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """attend_fresh_token for the word-read FP8 cache: q, K, V and the output by quarters (dims 4c + j)."""
    quarter4 = 4 * tl.arange(0, HEAD_DIM // 4)[None, :]
    half = HEAD_DIM // 2
    mask = quarter4 < HEAD_DIM
    k0 = load_rotated(key_ptr, key_row + quarter4, quarter4, mask, cos_row_ptr, sin_row_ptr, half, ROUND_IN_FP32)
    k1 = load_rotated(key_ptr, key_row + quarter4 + 1, quarter4 + 1, mask, cos_row_ptr, sin_row_ptr, half,
                      ROUND_IN_FP32)
    k2 = load_rotated(key_ptr, key_row + quarter4 + 2, quarter4 + 2, mask, cos_row_ptr, sin_row_ptr, half,
                      ROUND_IN_FP32)
    k3 = load_rotated(key_ptr, key_row + quarter4 + 3, quarter4 + 3, mask, cos_row_ptr, sin_row_ptr, half,
                      ROUND_IN_FP32)
    v0, v1, v2, v3 = load_quarters(value_ptr, value_row + quarter4, mask, 1, 0.0)
    k_amax = tl.maximum(tl.maximum(_abs_max(k0), _abs_max(k1)), tl.maximum(_abs_max(k2), _abs_max(k3)))
    v_amax = tl.maximum(tl.maximum(_abs_max(v0), _abs_max(v1)), tl.maximum(_abs_max(v2), _abs_max(v3)))
    k_scale = _head_scale(k_amax, True, FP8_MAX, MIN_SCALE)
    v_scale = _head_scale(v_amax, True, FP8_MAX, MIN_SCALE)
    ty = q0.dtype
    score = _dot_rows(q0, _stored(k0, k_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    score += _dot_rows(q1, _stored(k1, k_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    score += _dot_rows(q2, _stored(k2, k_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    score += _dot_rows(q3, _stored(k3, k_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    score = score * (k_scale * qk_scale)
    m_new = tl.maximum(m, score)
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(score - m_new)
    weight = (p * v_scale).to(ty)
    acc0 = _value_update(acc0, alpha, weight, _stored(v0, v_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    acc1 = _value_update(acc1, alpha, weight, _stored(v1, v_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    acc2 = _value_update(acc2, alpha, weight, _stored(v2, v_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    acc3 = _value_update(acc3, alpha, weight, _stored(v3, v_scale, ty, True, FP8_MAX, ROUND_IN_FP32))
    return m_new, l * alpha + p, acc0, acc1, acc2, acc3
