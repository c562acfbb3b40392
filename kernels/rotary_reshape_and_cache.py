"""Rotary embedding fused into the KV write: one launch instead of rotary_embedding then reshape_and_cache.

Per token t (one program each): q[t] is rotated in place at positions[t]; k[t] is rotated on the way into the
paged cache and v[t] written beside it, at slot slot_mapping[t] (skipped when negative, q still rotated), an
FP8 cache getting per-(token, KV head) scales. The results are those of

    rotary_embedding(q, k, positions, cos, sin); reshape_and_cache(k, v, kv_cache, slot_mapping, kv_scales)

bit for bit (same helpers, same roundings: the rotated k is rounded to k's dtype before the cache sees it, as
the in-place rotation stores it), except that k itself is left unrotated: the attention kernels read K from
the cache, so nothing reads the rotated k. See kernels/rotary_embedding.py for the rotation math and
kernels/reshape_and_cache.py for the cache layout and FP8 format.

Why: at batch 1 both kernels take ~2 us of pure launch latency per decoder layer on an H100; fused, the
second launch (and a second read of k) goes away.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import FP8_DTYPE, FP8_MAX, MIN_SCALE, check_launchable, is_interpreted, tl, triton
from modelgate.kernels.grid_dependency import pdl_supported, wait_for_previous_kernel
from modelgate.kernels.reshape_and_cache import (
    check_write_arguments,
    fp8_head_scales,
    quantize_heads,
    reshape_and_cache_reference,
)
from modelgate.kernels.rotary_embedding import check_rotary_arguments, rotary_embedding_reference, rotated_halves


@triton.jit
def _write_halves(
    x1,
    x2,  # [KV_HEADS_PAD, HALF_PAD] the two halves of each head vector (source dtype)
    cache_ptr,
    cache_first,
    mask,  # cache (kv_cache[i]) and the offsets/mask of the first halves
    scale_ptr,
    scale_offsets,
    head_mask,  # kv_scales[i] and the offsets/mask of each head's scale (IS_FP8 only)
    HALF: tl.constexpr,
    IS_FP8: tl.constexpr,
    FP8_MAX: tl.constexpr,
    MIN_SCALE: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    if IS_FP8:
        x1 = x1.to(tl.float32)
        x2 = x2.to(tl.float32)
        # max is exact: the max of the halves' amax is reshape_and_cache's amax of the whole vector.
        amax = tl.maximum(tl.max(tl.abs(x1), axis=1), tl.max(tl.abs(x2), axis=1))
        scales = fp8_head_scales(amax, FP8_MAX, MIN_SCALE)
        tl.store(cache_ptr + cache_first, quantize_heads(x1, scales, FP8_MAX, ROUND_IN_FP32), mask=mask)
        tl.store(cache_ptr + cache_first + HALF, quantize_heads(x2, scales, FP8_MAX, ROUND_IN_FP32), mask=mask)
        tl.store(scale_ptr + scale_offsets, scales, mask=head_mask)
    else:
        tl.store(cache_ptr + cache_first, x1.to(cache_ptr.dtype.element_ty), mask=mask)
        tl.store(cache_ptr + cache_first + HALF, x2.to(cache_ptr.dtype.element_ty), mask=mask)


# Index tensors start anywhere in the engine's packed transfer: see _prefill_attention_kernel's note.
@triton.jit(do_not_specialize_on_alignment=["slot_mapping_ptr", "positions_ptr"])
def _rotary_reshape_and_cache_kernel(
    q_ptr,  # [num_tokens, num_q_heads, head_dim] queries (bf16/fp16/fp32), head_dim stride 1; rotated in place
    key_ptr,  # [num_tokens, num_kv_heads, head_dim] keys, head_dim stride 1; read only (rotated into the cache)
    value_ptr,  # [num_tokens, num_kv_heads, head_dim] values, head_dim stride 1
    k_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[0], head_dim stride 1
    v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[1], same strides as k_cache
    k_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[0] (IS_FP8 only)
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[1] (IS_FP8 only)
    slot_mapping_ptr,  # [num_tokens] int64: cache slot of each token; < 0 = no cache write
    positions_ptr,  # [num_tokens] int64 position of each token
    cos_ptr,  # [max_positions, head_dim // 2] float32, column stride 1
    sin_ptr,  # [max_positions, head_dim // 2] float32, same strides as cos
    block_size,  # tokens per cache block
    stride_q_token,
    stride_q_head,  # q strides (elements)
    stride_key_token,
    stride_key_head,  # key strides
    stride_value_token,
    stride_value_head,  # value strides
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,  # cache strides (of kv_cache[i])
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,  # scale strides (of kv_scales[i])
    stride_rotary,  # elements between rows (positions) of cos and sin
    NUM_Q_HEADS: tl.constexpr,  # query heads per token
    NUM_KV_HEADS: tl.constexpr,  # KV heads per token
    Q_HEADS_PAD: tl.constexpr,  # NUM_Q_HEADS rounded up to a power of two
    KV_HEADS_PAD: tl.constexpr,  # NUM_KV_HEADS rounded up to a power of two
    HALF: tl.constexpr,  # head_dim // 2
    HALF_PAD: tl.constexpr,  # HALF rounded up to a power of two
    IS_FP8: tl.constexpr,  # quantize to float8e4nv and store one scale per (token, head)
    FP8_MAX: tl.constexpr,  # 448
    MIN_SCALE: tl.constexpr,  # lower bound of a scale
    ROUND_IN_FP32: tl.constexpr,  # interpreter only: round in fp32 before converting (its casts are off)
    PDL: tl.constexpr,  # launched with programmatic dependent launch: wait for the qkv projection first
):
    wait_for_previous_kernel(PDL)
    token = tl.program_id(0).to(tl.int64)  # int64: token * stride passes 2^31 for long prefills
    position = tl.load(positions_ptr + token)
    dims = tl.arange(0, HALF_PAD)
    dim_mask = dims < HALF
    cos = tl.load(cos_ptr + position * stride_rotary + dims, mask=dim_mask, other=0.0)[None, :]
    sin = tl.load(sin_ptr + position * stride_rotary + dims, mask=dim_mask, other=0.0)[None, :]
    # q first and for every token: padding rows (slot < 0) are rotated too, as the separate rotary kernel does.
    q_heads = tl.arange(0, Q_HEADS_PAD)
    q_mask = (q_heads < NUM_Q_HEADS)[:, None] & dim_mask[None, :]
    q_first = token * stride_q_token + q_heads[:, None] * stride_q_head + dims[None, :]
    q1, q2 = rotated_halves(q_ptr, q_first, q_mask, cos, sin, HALF, ROUND_IN_FP32)
    tl.store(q_ptr + q_first, q1, mask=q_mask)
    tl.store(q_ptr + q_first + HALF, q2, mask=q_mask)
    slot = tl.load(slot_mapping_ptr + token)
    if slot < 0:
        return
    # int64: block * stride_cache_block passes 2^31 for caches of more than 2G elements.
    block = slot.to(tl.int64) // block_size
    offset = slot.to(tl.int64) % block_size
    heads = tl.arange(0, KV_HEADS_PAD)
    head_mask = heads < NUM_KV_HEADS
    mask = head_mask[:, None] & dim_mask[None, :]
    key_first = token * stride_key_token + heads[:, None] * stride_key_head + dims[None, :]
    value_first = token * stride_value_token + heads[:, None] * stride_value_head + dims[None, :]
    cache_first = block * stride_cache_block + offset * stride_cache_slot + heads[:, None] * stride_cache_head
    cache_first = cache_first + dims[None, :]
    scale_offsets = block * stride_scale_block + offset * stride_scale_slot + heads * stride_scale_head
    k1, k2 = rotated_halves(key_ptr, key_first, mask, cos, sin, HALF, ROUND_IN_FP32)
    v1 = tl.load(value_ptr + value_first, mask=mask, other=0.0)
    v2 = tl.load(value_ptr + value_first + HALF, mask=mask, other=0.0)
    _write_halves(
        k1,
        k2,
        k_cache_ptr,
        cache_first,
        mask,
        k_scale_ptr,
        scale_offsets,
        head_mask,
        HALF,
        IS_FP8,
        FP8_MAX,
        MIN_SCALE,
        ROUND_IN_FP32,
    )
    _write_halves(
        v1,
        v2,
        v_cache_ptr,
        cache_first,
        mask,
        v_scale_ptr,
        scale_offsets,
        head_mask,
        HALF,
        IS_FP8,
        FP8_MAX,
        MIN_SCALE,
        ROUND_IN_FP32,
    )


def rotary_reshape_and_cache(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim] bf16/fp16/fp32, head_dim stride 1: rotated IN PLACE
    key: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim], head_dim stride 1: NOT modified
    value: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim], head_dim stride 1
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim] bf16/fp16/fp32/fp8 e4m3
    slot_mapping: torch.Tensor,  # [num_tokens] int64, < 0 = padding (no cache write)
    positions: torch.Tensor,  # [num_tokens] int64
    cos: torch.Tensor,  # [max_positions, head_dim // 2] float32
    sin: torch.Tensor,  # [max_positions, head_dim // 2] float32
    kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32, FP8 cache only
) -> None:
    """Rotate q in place and write the rotated key and the value into the paged cache, in one launch.

    Equals `rotary_embedding(q, key, positions, cos, sin)` followed by `reshape_and_cache(key, value, kv_cache,
    slot_mapping, kv_scales)` bit for bit in q, kv_cache and kv_scales, but leaves key unrotated. Arguments
    obey both launchers' contracts (strided head views of a fused qkv output are fine; positions <
    max_positions and distinct slots < num_blocks * block_size are not checked: that would synchronize).
    Any num_tokens including 0; nothing synchronizes with the device (CUDA-graph safe). Raises ValueError
    naming the argument on a shape, dtype, stride or device mismatch.
    """
    what = "rotary_reshape_and_cache"
    check_rotary_arguments(q, key, positions, cos, sin, what)
    check_write_arguments(key, value, kv_cache, slot_mapping, kv_scales, what)
    tensors = [q, key, value, kv_cache, slot_mapping, positions, cos, sin]
    check_launchable(_rotary_reshape_and_cache_kernel, what, *tensors, *([] if kv_scales is None else [kv_scales]))
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = key.shape[1]
    if num_tokens == 0:
        return
    is_fp8 = kv_cache.dtype == FP8_DTYPE
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    # Unused pointers when the cache is not FP8: any tensor on the device will do.
    k_scale, v_scale = (kv_scales[0], kv_scales[1]) if is_fp8 else (k_cache, v_cache)
    scale_strides = k_scale.stride()[:3] if is_fp8 else (0, 0, 0)
    q_heads_pad, kv_heads_pad = triton.next_power_of_2(num_q_heads), triton.next_power_of_2(num_kv_heads)
    half_pad = triton.next_power_of_2(head_dim // 2)
    pdl = pdl_supported(_rotary_reshape_and_cache_kernel, q.device)
    _rotary_reshape_and_cache_kernel[(num_tokens,)](
        q,
        key,
        value,
        k_cache,
        v_cache,
        k_scale,
        v_scale,
        slot_mapping,
        positions,
        cos,
        sin,
        kv_cache.shape[2],
        q.stride(0),
        q.stride(1),
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        *scale_strides,
        cos.stride(0),
        NUM_Q_HEADS=num_q_heads,
        NUM_KV_HEADS=num_kv_heads,
        Q_HEADS_PAD=q_heads_pad,
        KV_HEADS_PAD=kv_heads_pad,
        HALF=head_dim // 2,
        HALF_PAD=half_pad,
        IS_FP8=is_fp8,
        FP8_MAX=FP8_MAX,
        MIN_SCALE=MIN_SCALE,
        ROUND_IN_FP32=is_interpreted(_rotary_reshape_and_cache_kernel),
        PDL=pdl,
        launch_pdl=pdl,
        # Sized by q, the widest of the three: 32 heads x 64 pairs at Llama sizes -> 8 warps.
        num_warps=max(1, min(8, q_heads_pad * half_pad // 256)),
        # a * b - c * d rounded twice, as the rotary kernel (and torch) round it: no FMA contraction.
        enable_fp_fusion=False,
    )


def rotary_reshape_and_cache_reference(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim]: rotated IN PLACE
    key: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]: not modified
    value: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: torch.Tensor,  # [num_tokens] int64, < 0 = skip
    positions: torch.Tensor,  # [num_tokens] int64
    cos: torch.Tensor,  # [max_positions, head_dim // 2] float32
    sin: torch.Tensor,  # [max_positions, head_dim // 2] float32
    kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32 (FP8)
) -> None:
    """Plain-torch rotary_reshape_and_cache: the two references composed, with the same in-place contract."""
    rotated_q, rotated_key = rotary_embedding_reference(q, key, positions, cos, sin)
    q.copy_(rotated_q)
    reshape_and_cache_reference(rotated_key, value, kv_cache, slot_mapping, kv_scales)
