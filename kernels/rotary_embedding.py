"""Rotary position embedding (GPT-NeoX style: rotate halves, as Llama uses), applied to q and k in place.

For each token t at position p = positions[t] and each head, with the halves x1 = x[:D/2], x2 = x[D/2:]
and c = cos[p], s = sin[p] (float32 caches [max_positions, D/2], as backends/llm/models/rotary.py builds them):
  x1' = x1 * c - x2 * s,   x2' = x2 * c + x1 * s
computed in float32 (each product and difference rounded as torch's separate ops round them: the launch
disables Triton's mul-add contraction into FMA) and stored back in the input dtype. The result equals
rotary.py's `_rotate` bit for bit.

In place, because q and k are usually views of the fused qkv projection's output ([T, Hq + 2 Hkv, D] split
along heads): each element is read once and written once, with no new q/k tensors. A program rotates all q
and k heads of its tokens, so cos/sin of a position are read once per token: one token per program at Llama
sizes (32 heads of 128), several (BLOCK_T, ~TILE_ELEMENTS elements) for small models, which keeps their
launches (and the Triton interpreter, which runs programs one by one) short.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import HAS_TRITON, check_launchable, is_interpreted, tl, to_output, triton

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
TILE_ELEMENTS = 4096  # BLOCK_T * Q_HEADS_PAD * HEAD_DIM: tokens per program = TILE_ELEMENTS // (that per token)


@triton.jit
def rotated_halves(x_ptr, first, mask, cos, sin, HALF: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """The rotated halves (x1', x2') of the head vectors whose first halves start at x_ptr + first, in x's dtype.

    Any block shape: first/mask are offsets/mask of the first halves, cos/sin broadcast against them. Also the
    fused KV write's rotation (kernels/rotary_reshape_and_cache.py): one definition keeps both bit-identical.
    """
    x1 = tl.load(x_ptr + first, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + first + HALF, mask=mask, other=0.0).to(tl.float32)
    dtype = x_ptr.dtype.element_ty
    return to_output(x1 * cos - x2 * sin, dtype, ROUND_IN_FP32), to_output(x2 * cos + x1 * sin, dtype, ROUND_IN_FP32)


@triton.jit
def _rotate_heads(
    x_ptr,
    tokens,
    token_mask,
    stride_token,
    stride_head,
    cos,
    sin,
    NUM_HEADS: tl.constexpr,
    HEADS_PAD: tl.constexpr,
    HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    """Rotate NUM_HEADS heads of the tokens `tokens` ([BLOCK_T] int64) in place; cos/sin: [BLOCK_T, HALF_PAD]."""
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HALF_PAD)
    mask = token_mask[:, None, None] & (heads < NUM_HEADS)[None, :, None] & (dims < HALF)[None, None, :]
    first = tokens[:, None, None] * stride_token + heads[None, :, None] * stride_head + dims[None, None, :]
    out1, out2 = rotated_halves(x_ptr, first, mask, cos[:, None, :], sin[:, None, :], HALF, ROUND_IN_FP32)
    tl.store(x_ptr + first, out1, mask=mask)
    tl.store(x_ptr + first + HALF, out2, mask=mask)


# Index tensors start anywhere in the engine's packed transfer: see _prefill_attention_kernel's note.
@triton.jit(do_not_specialize_on_alignment=["positions_ptr"])
def _rotary_embedding_kernel(
    q_ptr,  # [num_tokens, num_q_heads, head_dim] queries (bf16/fp16/fp32), head_dim stride 1; rotated in place
    k_ptr,  # [num_tokens, num_kv_heads, head_dim] keys, head_dim stride 1; rotated in place
    positions_ptr,  # [num_tokens] int64 position of each token
    cos_ptr,  # [max_positions, head_dim // 2] float32, column stride 1
    sin_ptr,  # [max_positions, head_dim // 2] float32, same strides as cos
    stride_q_token,
    stride_q_head,  # q strides (elements)
    stride_k_token,
    stride_k_head,  # k strides
    stride_cache,  # elements between rows (positions) of cos and sin
    num_tokens,  # tokens (rows of q, k, positions)
    BLOCK_T: tl.constexpr,  # tokens per program
    NUM_Q_HEADS: tl.constexpr,  # query heads per token
    NUM_KV_HEADS: tl.constexpr,  # key heads per token
    Q_HEADS_PAD: tl.constexpr,  # NUM_Q_HEADS rounded up to a power of two
    KV_HEADS_PAD: tl.constexpr,  # NUM_KV_HEADS rounded up to a power of two
    HALF: tl.constexpr,  # head_dim // 2
    HALF_PAD: tl.constexpr,  # HALF rounded up to a power of two
    ROUND_IN_FP32: tl.constexpr,  # interpreter only: round to nearest even in fp32 before converting
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    token_mask = tokens < num_tokens
    tokens = tokens.to(tl.int64)  # int64: tokens * stride passes 2^31 for long prefills
    positions = tl.load(positions_ptr + tokens, mask=token_mask, other=0)
    dims = tl.arange(0, HALF_PAD)
    cache_offsets = positions[:, None] * stride_cache + dims[None, :]
    cache_mask = token_mask[:, None] & (dims < HALF)[None, :]
    cos = tl.load(cos_ptr + cache_offsets, mask=cache_mask, other=0.0)
    sin = tl.load(sin_ptr + cache_offsets, mask=cache_mask, other=0.0)
    _rotate_heads(
        q_ptr,
        tokens,
        token_mask,
        stride_q_token,
        stride_q_head,
        cos,
        sin,
        NUM_Q_HEADS,
        Q_HEADS_PAD,
        HALF,
        HALF_PAD,
        ROUND_IN_FP32,
    )
    _rotate_heads(
        k_ptr,
        tokens,
        token_mask,
        stride_k_token,
        stride_k_head,
        cos,
        sin,
        NUM_KV_HEADS,
        KV_HEADS_PAD,
        HALF,
        HALF_PAD,
        ROUND_IN_FP32,
    )


def can_run_on(device: torch.device) -> bool:
    """True when the kernel can run on `device`: CUDA, or the CPU under TRITON_INTERPRET=1."""
    return HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and is_interpreted(_rotary_embedding_kernel)))


def _check_heads(t: torch.Tensor, name: str, num_tokens: int, head_dim: int, what: str) -> None:
    if t.dim() != 3 or t.shape[0] != num_tokens or t.shape[2] != head_dim:
        raise ValueError(
            f"{what}: {name} must be [num_tokens={num_tokens}, heads, head_dim={head_dim}], got {tuple(t.shape)}"
        )
    if t.dtype not in DTYPES:
        raise ValueError(f"{what}: {name} must be bfloat16, float16 or float32, got {t.dtype}")
    if t.stride(2) != 1:
        raise ValueError(f"{what}: {name} needs a contiguous head_dim (stride 1), got strides {t.stride()}")


def check_rotary_arguments(q, k, positions, cos, sin, what: str) -> None:
    """Raise ValueError naming the argument unless q, k, positions, cos and sin fit rotary_embedding."""
    if q.dim() != 3:
        raise ValueError(f"{what}: q must be [num_tokens, num_heads, head_dim], got shape {tuple(q.shape)}")
    num_tokens, _, head_dim = q.shape
    if head_dim == 0 or head_dim % 2:
        raise ValueError(f"{what}: q's head_dim must be even and > 0, got {head_dim}")
    _check_heads(q, "q", num_tokens, head_dim, what)
    _check_heads(k, "k", num_tokens, head_dim, what)
    if positions.dtype != torch.int64 or positions.shape != (num_tokens,):
        raise ValueError(
            f"{what}: positions must be int64 [num_tokens={num_tokens}], got {positions.dtype} {tuple(positions.shape)}"
        )
    if num_tokens > 1 and positions.stride(0) != 1:
        raise ValueError(f"{what}: positions must be contiguous, got stride {positions.stride()}")
    for name, cache in (("cos", cos), ("sin", sin)):
        if cache.dtype != torch.float32 or cache.dim() != 2 or cache.shape[1] != head_dim // 2:
            raise ValueError(
                f"{what}: {name} must be float32 [max_positions, head_dim // 2 = {head_dim // 2}], "
                f"got {cache.dtype} {tuple(cache.shape)}"
            )
        if cache.stride(1) != 1 and head_dim > 2:
            raise ValueError(f"{what}: {name} needs unit column stride, got strides {cache.stride()}")
    if sin.shape != cos.shape or sin.stride() != cos.stride():
        raise ValueError(f"{what}: sin must have cos's shape and strides, got {tuple(sin.shape)} {sin.stride()}")


def rotary_embedding(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim] bf16/fp16/fp32, head_dim stride 1: rotated IN PLACE
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim] bf16/fp16/fp32, head_dim stride 1: rotated IN PLACE
    positions: torch.Tensor,  # [num_tokens] int64
    cos: torch.Tensor,  # [max_positions, head_dim // 2] float32
    sin: torch.Tensor,  # [max_positions, head_dim // 2] float32
) -> None:
    """Rotate q and k in place at `positions` (GPT-NeoX halves); see the module docstring for the math.

    q and k may be strided views (e.g. of a fused qkv output) along tokens and heads. positions must be
    < max_positions (not checked: that would synchronize). Any num_tokens including 0; nothing synchronizes
    with the device (CUDA-graph safe). Raises ValueError naming the argument on a shape, dtype, stride or
    device mismatch.
    """
    what = "rotary_embedding"
    check_rotary_arguments(q, k, positions, cos, sin, what)
    check_launchable(_rotary_embedding_kernel, what, q, k, positions, cos, sin)
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if num_tokens == 0:
        return
    half = head_dim // 2
    q_heads_pad, kv_heads_pad = triton.next_power_of_2(num_q_heads), triton.next_power_of_2(num_kv_heads)
    half_pad = triton.next_power_of_2(half)
    block_t = max(1, min(triton.next_power_of_2(num_tokens), TILE_ELEMENTS // (2 * q_heads_pad * half_pad)))
    _rotary_embedding_kernel[(triton.cdiv(num_tokens, block_t),)](
        q,
        k,
        positions,
        cos,
        sin,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        cos.stride(0),
        num_tokens,
        BLOCK_T=block_t,
        NUM_Q_HEADS=num_q_heads,
        NUM_KV_HEADS=num_kv_heads,
        Q_HEADS_PAD=q_heads_pad,
        KV_HEADS_PAD=kv_heads_pad,
        HALF=half,
        HALF_PAD=half_pad,
        ROUND_IN_FP32=is_interpreted(_rotary_embedding_kernel),
        num_warps=max(1, min(8, block_t * q_heads_pad * half_pad // 256)),
        # a * b - c * d rounded twice, as torch's separate kernels round it (FMA would round once).
        enable_fp_fusion=False,
    )


def rotary_embedding_reference(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim]
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
    positions: torch.Tensor,  # [num_tokens] int64
    cos: torch.Tensor,  # [max_positions, head_dim // 2] float32
    sin: torch.Tensor,  # [max_positions, head_dim // 2] float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """rotary.py's math in plain torch: new rotated (q, k); the inputs are not modified."""
    cos_t, sin_t = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    return _rotate_reference(q, cos_t, sin_t), _rotate_reference(k, cos_t, sin_t)


def _rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
