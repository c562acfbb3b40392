"""The KV write: store each new token's K and V into the paged cache at its slot, quantizing for an FP8 cache.

Cache layout (one layer): kv_cache [2, num_blocks, block_size, num_kv_heads, head_dim]; index 0 holds K, 1 holds
V; the token in slot s lives at [:, s // block_size, s % block_size]. A negative slot means "no token" (the
padded rows of a CUDA-graph batch) and is skipped.

FP8 KV format (`kv_cache_dtype: fp8`): the same cache tensor in float8_e4m3fn plus
kv_scales [2, num_blocks, block_size, num_kv_heads] float32, one dynamic scale per (token, KV head) for K and
for V, so that

    K[token, h, :] ~= kv_cache[0, b, o, h, :].float() * kv_scales[0, b, o, h]      (b, o = divmod(slot, block_size))

with scale = max(amax|x[h, :]| / 448, MIN_SCALE) and x / scale rounded to nearest even, exactly as
`kernels.fp8_quant` quantizes activations per token. Why per (token, head) rather than static per-head scales:
- accuracy: every head vector uses the whole e4m3 range, so each element keeps ~2^-4 relative precision
  whatever the outliers (attention-sink tokens, K-bias outliers of Qwen2-style models) and nothing can
  saturate; a static scale (1.0 by default, or calibrated on a first prefill) clips any later token past
  448 * scale and needs a calibration step the engine would have to own;
- bandwidth: the scales add 4 bytes per (token, head) to head_dim bytes of K (and of V): +3.1% at head_dim 128,
  +6.3% at 64, the same in memory. Attention applies them almost for free: the K scale multiplies a score
  column (q . k8 * k_scale) and the V scale a probability column (p * v_scale), BLOCK_N multiplies per tile
  rather than BLOCK_N * head_dim.
`kernels.paged_decode_attention` and `kernels.prefill_attention` read this format; `gather_kv_reference`
below is the one place that turns it back into float32 for the torch references.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from modelgate.kernels.fp8_quant import (
    FP8_DTYPE,
    FP8_MAX,
    MIN_SCALE,
    check_launchable,
    is_interpreted,
    tl,
    to_e4m3,
    triton,
)

SOURCE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
CACHE_DTYPES = (torch.bfloat16, torch.float16, torch.float32, FP8_DTYPE)


@triton.jit
def fp8_head_scales(amax, FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr):
    """[heads] float32 amax |x| of each head vector -> its FP8 scale, max(amax / FP8_MAX, MIN_SCALE) (IEEE division).

    Shared with the fused rotary KV write (kernels/rotary_reshape_and_cache.py) so both write the same format.
    """
    return tl.maximum(tl.div_rn(amax, FP8_MAX), MIN_SCALE)


@triton.jit
def quantize_heads(x, scales, FP8_MAX: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """x [heads, dims] float32, scales [heads] -> x / scales as saturated e4m3 (round to nearest even)."""
    return to_e4m3(tl.div_rn(x, scales[:, None]), FP8_MAX, ROUND_IN_FP32)


# Index tensors start anywhere in the engine's packed transfer: see _prefill_attention_kernel's note.
@triton.jit(do_not_specialize_on_alignment=["slot_mapping_ptr"])
def _reshape_and_cache_kernel(
    key_ptr,  # [num_tokens, num_kv_heads, head_dim] new keys (bf16/fp16/fp32), head_dim stride 1
    value_ptr,  # [num_tokens, num_kv_heads, head_dim] new values, head_dim stride 1
    k_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[0], head_dim stride 1
    v_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim] kv_cache[1], same strides as k_cache
    k_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[0] (IS_FP8 only)
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32 kv_scales[1] (IS_FP8 only)
    slot_mapping_ptr,  # [num_tokens] int64: cache slot of each token; < 0 = skip
    block_size,  # tokens per cache block
    stride_key_token,
    stride_key_head,  # key strides (elements)
    stride_value_token,
    stride_value_head,  # value strides
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,  # cache strides (of kv_cache[i])
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,  # scale strides (of kv_scales[i])
    NUM_KV_HEADS: tl.constexpr,  # KV heads per token
    HEAD_DIM: tl.constexpr,  # elements per head
    HEADS_PAD: tl.constexpr,  # NUM_KV_HEADS rounded up to a power of two
    HEAD_DIM_PAD: tl.constexpr,  # HEAD_DIM rounded up to a power of two
    IS_FP8: tl.constexpr,  # quantize to float8e4nv and store one scale per (token, head)
    FP8_MAX: tl.constexpr,  # 448
    MIN_SCALE: tl.constexpr,  # lower bound of a scale (an all-zero head still gets a finite scale)
    ROUND_IN_FP32: tl.constexpr,  # round to the e4m3 grid before converting (the interpreter's cast is off)
):
    # One program per token: all its heads, K and V.
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token)
    if slot < 0:
        return
    # int64: block * stride_cache_block passes 2^31 for caches of more than 2G elements.
    block = slot.to(tl.int64) // block_size
    offset = slot.to(tl.int64) % block_size
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HEAD_DIM_PAD)
    mask = (heads < NUM_KV_HEADS)[:, None] & (dims < HEAD_DIM)[None, :]
    token64 = token.to(tl.int64)
    key_offsets = token64 * stride_key_token + heads[:, None] * stride_key_head + dims[None, :]
    value_offsets = token64 * stride_value_token + heads[:, None] * stride_value_head + dims[None, :]
    cache_offsets = block * stride_cache_block + offset * stride_cache_slot + heads[:, None] * stride_cache_head
    cache_offsets = cache_offsets + dims[None, :]
    key = tl.load(key_ptr + key_offsets, mask=mask, other=0.0)
    value = tl.load(value_ptr + value_offsets, mask=mask, other=0.0)
    if IS_FP8:
        scale_offsets = block * stride_scale_block + offset * stride_scale_slot + heads * stride_scale_head
        head_mask = heads < NUM_KV_HEADS
        key = key.to(tl.float32)
        value = value.to(tl.float32)
        key_scale = fp8_head_scales(tl.max(tl.abs(key), axis=1), FP8_MAX, MIN_SCALE)  # [HEADS_PAD]
        value_scale = fp8_head_scales(tl.max(tl.abs(value), axis=1), FP8_MAX, MIN_SCALE)
        key_q = quantize_heads(key, key_scale, FP8_MAX, ROUND_IN_FP32)
        value_q = quantize_heads(value, value_scale, FP8_MAX, ROUND_IN_FP32)
        tl.store(k_cache_ptr + cache_offsets, key_q, mask=mask)
        tl.store(v_cache_ptr + cache_offsets, value_q, mask=mask)
        tl.store(k_scale_ptr + scale_offsets, key_scale, mask=head_mask)
        tl.store(v_scale_ptr + scale_offsets, value_scale, mask=head_mask)
    else:
        tl.store(k_cache_ptr + cache_offsets, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + cache_offsets, value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def reshape_and_cache(
    key: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim] bf16/fp16/fp32
    value: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim] bf16/fp16/fp32/fp8 e4m3
    slot_mapping: torch.Tensor,  # [num_tokens] int64, < 0 = padding (skipped)
    kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32, FP8 cache only
) -> None:
    """Write K/V of new tokens into the paged cache, in place.

    Token t goes to slot s = slot_mapping[t] (block s // block_size, offset s % block_size); t is skipped when
    s < 0. A non-FP8 cache gets key/value cast to its dtype (round to nearest even). An FP8 cache gets
    per-(token, head) quantized values and their scales in kv_scales (see the module docstring); kv_scales
    is required for an FP8 cache and refused otherwise. Slots must be distinct and < num_blocks * block_size
    (not checked: that would synchronize). key/value may be strided views (e.g. slices of a fused QKV output)
    as long as head_dim is contiguous. Raises ValueError on a shape, dtype, stride or device mismatch.
    """
    what = "reshape_and_cache"
    check_write_arguments(key, value, kv_cache, slot_mapping, kv_scales, what)
    check_launchable(_reshape_and_cache_kernel, what, key, value, kv_cache, slot_mapping)
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    is_fp8 = kv_cache.dtype == FP8_DTYPE
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    # Unused pointers when the cache is not FP8: any tensor on the device will do.
    k_scale, v_scale = (kv_scales[0], kv_scales[1]) if is_fp8 else (k_cache, v_cache)
    scale_strides = k_scale.stride()[:3] if is_fp8 else (0, 0, 0)
    heads_pad = triton.next_power_of_2(num_kv_heads)
    head_dim_pad = triton.next_power_of_2(head_dim)
    _reshape_and_cache_kernel[(num_tokens,)](
        key,
        value,
        k_cache,
        v_cache,
        k_scale,
        v_scale,
        slot_mapping,
        kv_cache.shape[2],
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        *scale_strides,
        NUM_KV_HEADS=num_kv_heads,
        HEAD_DIM=head_dim,
        HEADS_PAD=heads_pad,
        HEAD_DIM_PAD=head_dim_pad,
        IS_FP8=is_fp8,
        FP8_MAX=FP8_MAX,
        MIN_SCALE=MIN_SCALE,
        ROUND_IN_FP32=is_interpreted(_reshape_and_cache_kernel),
        num_warps=max(1, min(8, heads_pad * head_dim_pad // 256)),
    )


def check_write_arguments(key, value, kv_cache, slot_mapping, kv_scales, what: str) -> None:
    """Raise ValueError naming the argument unless key, value, the cache and slot_mapping fit the KV write."""
    if key.dim() != 3 or value.shape != key.shape:
        raise ValueError(
            f"{what}: key and value must both be [num_tokens, num_kv_heads, head_dim], "
            f"got {tuple(key.shape)} and {tuple(value.shape)}"
        )
    if key.dtype not in SOURCE_DTYPES or value.dtype not in SOURCE_DTYPES:
        raise ValueError(f"{what}: key/value must be bfloat16, float16 or float32, got {key.dtype}/{value.dtype}")
    check_kv_cache(kv_cache, kv_scales, what, num_kv_heads=key.shape[1], head_dim=key.shape[2])
    if slot_mapping.dtype != torch.int64 or slot_mapping.shape != (key.shape[0],):
        raise ValueError(
            f"{what}: slot_mapping must be int64 [num_tokens={key.shape[0]}], "
            f"got {slot_mapping.dtype} {tuple(slot_mapping.shape)}"
        )
    if slot_mapping.shape[0] > 1 and slot_mapping.stride(0) != 1:
        raise ValueError(f"{what}: slot_mapping must be contiguous, got stride {slot_mapping.stride()}")
    if key.shape[2] > 1 and (key.stride(2) != 1 or value.stride(2) != 1):
        raise ValueError(
            f"{what}: key/value need a contiguous head_dim (stride 1), got strides {key.stride()}/{value.stride()}"
        )


def check_kv_cache(
    kv_cache: torch.Tensor, kv_scales: torch.Tensor | None, what: str, num_kv_heads: int, head_dim: int
) -> None:
    """Raise ValueError unless kv_cache (and kv_scales) have the paged layout, dtypes and strides kernels need."""
    if kv_cache.dim() != 5 or kv_cache.shape[0] != 2:
        raise ValueError(
            f"{what}: kv_cache must be [2, num_blocks, block_size, num_kv_heads, head_dim], got {tuple(kv_cache.shape)}"
        )
    if kv_cache.dtype not in CACHE_DTYPES:
        raise ValueError(f"{what}: kv_cache must be bfloat16, float16, float32 or float8_e4m3fn, got {kv_cache.dtype}")
    if kv_cache.shape[3] != num_kv_heads or kv_cache.shape[4] != head_dim:
        raise ValueError(
            f"{what}: kv_cache has {kv_cache.shape[3]} KV heads of {kv_cache.shape[4]} dims, "
            f"the inputs have {num_kv_heads} of {head_dim}"
        )
    if head_dim > 1 and kv_cache.stride(4) != 1:
        raise ValueError(f"{what}: kv_cache needs a contiguous head_dim (stride 1), got strides {kv_cache.stride()}")
    if kv_cache.dtype != FP8_DTYPE:
        if kv_scales is not None:
            raise ValueError(f"{what}: kv_scales given for a {kv_cache.dtype} cache (only FP8 caches have scales)")
        return
    expected = tuple(kv_cache.shape[:4])
    if kv_scales is None:
        raise ValueError(f"{what}: an FP8 kv_cache needs kv_scales float32 {list(expected)}")
    if kv_scales.dtype != torch.float32 or tuple(kv_scales.shape) != expected:
        raise ValueError(
            f"{what}: kv_scales must be float32 {list(expected)}, got {kv_scales.dtype} {tuple(kv_scales.shape)}"
        )
    if kv_scales.device != kv_cache.device:
        raise ValueError(f"{what}: kv_scales is on {kv_scales.device}, kv_cache on {kv_cache.device}")


def allocate_kv_cache(
    num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An empty (uninitialized) cache of one layer, with its scales when dtype is float8_e4m3fn."""
    kv_cache = torch.empty((2, num_blocks, block_size, num_kv_heads, head_dim), dtype=dtype, device=device)
    if dtype != FP8_DTYPE:
        return kv_cache, None
    kv_scales = torch.empty((2, num_blocks, block_size, num_kv_heads), dtype=torch.float32, device=device)
    return kv_cache, kv_scales


class QuantizedHeads(NamedTuple):
    """Per-(token, head) FP8 values: values[t, h, :] * scales[t, h] ~= x[t, h, :]."""

    values: torch.Tensor  # [num_tokens, num_kv_heads, head_dim] float8_e4m3fn
    scales: torch.Tensor  # [num_tokens, num_kv_heads] float32, >= MIN_SCALE


def quantize_heads_reference(x: torch.Tensor) -> QuantizedHeads:
    """Torch version of the kernel's quantization. x: [num_tokens, num_kv_heads, head_dim]."""
    x32 = x.float()
    amax = x32.abs().amax(dim=-1)
    scales = torch.clamp(amax / torch.full_like(amax, FP8_MAX), min=MIN_SCALE)  # IEEE division, as the kernel's
    values = torch.clamp(x32 / scales[..., None], -FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return QuantizedHeads(values, scales)


def reshape_and_cache_reference(
    key: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    value: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: torch.Tensor,  # [num_tokens] int64, < 0 = skip
    kv_scales: torch.Tensor | None = None,  # [2, num_blocks, block_size, num_kv_heads] float32 (FP8)
) -> None:
    """Plain-torch reshape_and_cache (any device), in place."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    num_kv_heads, head_dim = kv_cache.shape[3], kv_cache.shape[4]
    for index, x in enumerate((key[keep], value[keep])):
        flat = kv_cache[index].view(-1, num_kv_heads, head_dim)
        if kv_cache.dtype == FP8_DTYPE:
            quantized = quantize_heads_reference(x)
            flat[slots] = quantized.values
            kv_scales[index].view(-1, num_kv_heads)[slots] = quantized.scales
        else:
            flat[slots] = x.to(kv_cache.dtype)


def gather_kv_reference(
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    kv_scales: torch.Tensor | None,  # [2, num_blocks, block_size, num_kv_heads] float32 (FP8 cache)
    block_table: torch.Tensor,  # [max_blocks] int32: one sequence's blocks
    num_tokens: int,  # tokens of the sequence to gather (its context length)
) -> tuple[torch.Tensor, torch.Tensor]:  # K, V: [num_tokens, num_kv_heads, head_dim] float32
    """One sequence's first num_tokens keys and values in float32, dequantized when the cache is FP8."""
    block_size = kv_cache.shape[2]
    num_blocks = -(-num_tokens // block_size)
    blocks = block_table[:num_blocks].long()
    keys = kv_cache[0][blocks].flatten(0, 1)[:num_tokens].float()
    values = kv_cache[1][blocks].flatten(0, 1)[:num_tokens].float()
    if kv_cache.dtype == FP8_DTYPE:
        keys = keys * kv_scales[0][blocks].flatten(0, 1)[:num_tokens, :, None]
        values = values * kv_scales[1][blocks].flatten(0, 1)[:num_tokens, :, None]
    return keys, values
