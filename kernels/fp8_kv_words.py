"""FP8 KV tiles read as 32-bit words: the decode kernel's fast path for a float8_e4m3fn cache (and the prefill
kernel's, where prefill_attention.FP8_WORDS is on).

Loading an e4m3 K/V tile as float8 lets the compiler stage it in shared memory as bytes and then read it back a
byte at a time to build the 16-bit tensor-core operands (there is no transposing matrix load for 8-bit
data); the H100 measured the FP8 decode at half the bytes per second of bf16 that way. Here the cache is
viewed as int32 words of 4 e4m3 values: word c of a token's head holds dims 4c..4c+3. Byte j of every word
is one "quarter" of the head: dims j, j+4, j+8, ... Each quarter converts in registers (shift, mask, bitcast,
cvt) into a bf16/fp16 tile that feeds tl.dot like a bf16 cache would. The query is split into the same
quarters (q_j = q[:, j::4]) so that q.k = sum_j q_j.k_j, and the output accumulates per quarter
(acc_j = p @ v_j), stored back to dims 4c + j.

Needs head_dim a power of two >= 64 (a quarter is a tl.dot K of at least 16): `packed_fp8_ok`.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import tl, triton
from modelgate.kernels.paged_attention_common import attention_dot, causal_visible


def packed_fp8_ok(kv_cache: torch.Tensor, head_dim: int) -> bool:
    """True when the decode kernel can read this FP8 cache as words (head_dim a power of two >= 64)."""
    return kv_cache.dtype == torch.float8_e4m3fn and head_dim >= 64 and head_dim & (head_dim - 1) == 0


def as_words(cache: torch.Tensor) -> torch.Tensor:
    """[num_blocks, block_size, num_kv_heads, head_dim] float8 -> [..., head_dim // 4] int32, same memory."""
    return cache.view(torch.int32)


@triton.jit
def quarter_of_words(words, J: tl.constexpr, OUT_TY: tl.constexpr):
    """Byte J of every int32 word, as the e4m3 value it holds, converted to OUT_TY."""
    return ((words >> (8 * J)) & 0xFF).to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(OUT_TY)


# Two words at a time (pack=2): two byte permutes gather byte j of both words into one 16-bit half, and one
# cvt per half turns that pair of e4m3 values into an f16x2 register, the tensor cores' operand format. Built
# from Triton's ops instead, each value is shifted, masked and re-packed on its own before the same cvt
# (about three times the instructions in the tile loop's SASS).
_QUARTERS_F16_PTX: tl.constexpr = tl.constexpr("""
{
.reg .b32 lo, hi;
.reg .b16 q0, q1, q2, q3;
prmt.b32 lo, $4, $5, 0x5140;
prmt.b32 hi, $4, $5, 0x7362;
mov.b32 {q0, q1}, lo;
mov.b32 {q2, q3}, hi;
cvt.rn.f16x2.e4m3x2 $0, q0;
cvt.rn.f16x2.e4m3x2 $1, q1;
cvt.rn.f16x2.e4m3x2 $2, q2;
cvt.rn.f16x2.e4m3x2 $3, q3;
}
""")


@triton.jit
def quarters_of_words(words, OUT_TY: tl.constexpr, PTX: tl.constexpr):
    """(quarter 0, 1, 2, 3) of int32 words as OUT_TY; PTX (OUT_TY float16, a CUDA GPU of compute capability
    8.9 or later, not the interpreter) converts them with inline PTX, the same values."""
    if PTX:
        return tl.inline_asm_elementwise(
            _QUARTERS_F16_PTX, "=r,=r,=r,=r,r,r", [words], dtype=(tl.float16,) * 4, is_pure=True, pack=2
        )
    else:
        return (
            quarter_of_words(words, 0, OUT_TY),
            quarter_of_words(words, 1, OUT_TY),
            quarter_of_words(words, 2, OUT_TY),
            quarter_of_words(words, 3, OUT_TY),
        )


@triton.jit
def load_quarters(ptr, offsets, mask, J_STRIDE: tl.constexpr, OTHER):
    """(x[..., 0::4], x[..., 1::4], x[..., 2::4], x[..., 3::4]) of a tensor of head vectors at ptr + offsets,
    offsets addressing element 4c of each head vector (so offsets + j address dims 4c + j)."""
    x0 = tl.load(ptr + offsets, mask=mask, other=OTHER)
    x1 = tl.load(ptr + offsets + J_STRIDE, mask=mask, other=OTHER)
    x2 = tl.load(ptr + offsets + 2 * J_STRIDE, mask=mask, other=OTHER)
    x3 = tl.load(ptr + offsets + 3 * J_STRIDE, mask=mask, other=OTHER)
    return x0, x1, x2, x3


@triton.jit
def store_quarters(ptr, x0, x1, x2, x3, mask):
    """Store quarters x_j to ptr + j (ptr addressing dims 4c of each row): the inverse of load_quarters."""
    tl.store(ptr, x0, mask=mask)
    tl.store(ptr + 1, x1, mask=mask)
    tl.store(ptr + 2, x2, mask=mask)
    tl.store(ptr + 3, x3, mask=mask)


@triton.jit
def store_normalized_quarters(ptr, acc0, acc1, acc2, acc3, inverse, mask):
    """Store acc_j * inverse (the softmax's 1 / l per row, [M, 1]) in ptr's dtype at ptr + j (ptr addressing dims
    4c of each row), as store_quarters does."""
    ty = ptr.dtype.element_ty
    store_quarters(
        ptr, (acc0 * inverse).to(ty), (acc1 * inverse).to(ty), (acc2 * inverse).to(ty), (acc3 * inverse).to(ty), mask
    )


@triton.jit
def attend_fp8_words(
    q0,
    q1,
    q2,
    q3,  # [M, QUARTER] query quarters q[:, j::4], q's dtype
    m,
    l,  # [M] float32 running max (log2 domain) and sum, as in attend_kv_tile
    acc0,
    acc1,
    acc2,
    acc3,  # [M, QUARTER] float32 output quarters
    k,
    v,
    k_scale,
    v_scale,  # one tile: K and V words [BLOCK_N, QUARTER], their per-token scales [BLOCK_N]
    visible,  # [1, BLOCK_N] keys the query sees
    qk_scale,
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    PTX_CONVERT: tl.constexpr,  # quarters_of_words's PTX (q's dtype float16)
):
    """One online-softmax step over a loaded tile of FP8 keys; returns (m, l, acc0..acc3)."""
    ty = q0.dtype
    k0, k1, k2, k3 = quarters_of_words(k, ty, PTX_CONVERT)
    scores = attention_dot(q0, tl.trans(k0), UPCAST_DOT, DOT_PRECISION)
    scores += attention_dot(q1, tl.trans(k1), UPCAST_DOT, DOT_PRECISION)
    scores += attention_dot(q2, tl.trans(k2), UPCAST_DOT, DOT_PRECISION)
    scores += attention_dot(q3, tl.trans(k3), UPCAST_DOT, DOT_PRECISION)
    scores = tl.where(visible, scores * (k_scale * qk_scale)[None, :], float("-inf"))
    m_new = tl.maximum(m, tl.max(scores, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no visible key yet: p and alpha stay 0, not NaN
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(scores - m_safe[:, None])
    l = l * alpha + tl.sum(p, axis=1)
    p = (p * v_scale[None, :]).to(ty)
    v0, v1, v2, v3 = quarters_of_words(v, ty, PTX_CONVERT)
    acc0 = acc0 * alpha[:, None] + attention_dot(p, v0, UPCAST_DOT, DOT_PRECISION)
    acc1 = acc1 * alpha[:, None] + attention_dot(p, v1, UPCAST_DOT, DOT_PRECISION)
    acc2 = acc2 * alpha[:, None] + attention_dot(p, v2, UPCAST_DOT, DOT_PRECISION)
    acc3 = acc3 * alpha[:, None] + attention_dot(p, v3, UPCAST_DOT, DOT_PRECISION)
    return m_new, l, acc0, acc1, acc2, acc3


@triton.jit
def attend_fp8_words_range(
    q0,
    q1,
    q2,
    q3,
    m,
    l,
    acc0,
    acc1,
    acc2,
    acc3,  # as in attend_fp8_words
    k_words_ptr,
    v_words_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim // 4] int32 views of the cache
    k_scale_ptr,
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32
    block_table_ptr,  # this sequence's row of block_tables (int32)
    start,
    end,  # keys [start, end) in tiles of BLOCK_N from start (end <= the context length)
    window_start,  # keys before it are not visible
    kv_head,
    block_size,
    qk_scale,
    stride_word_block,
    stride_word_slot,
    stride_word_head,
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,
    QUARTER: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    PTX_CONVERT: tl.constexpr,
):
    """The online softmax over keys [start, end); returns (m, l, acc0..acc3).

    Not adopted (session 28, H100): issuing tile i + 1's reads before tile i's dots, two tiles in flight per
    program, was slower at every size measured (batch 64 at 1,024 tokens 54.2 -> 75.7 us, batch 256 at 193
    52.9 -> 61.6; decode step at batch 64 4.38 -> 4.67 ms; benchmarks/results/decode_attention_*_session28.log).
    """
    keys = tl.arange(0, BLOCK_N)
    for tile_start in range(start, end, BLOCK_N):
        positions = tile_start + keys
        in_range = positions < end
        k, v, k_scale, v_scale = load_fp8_words_tile(
            k_words_ptr, v_words_ptr, k_scale_ptr, v_scale_ptr, block_table_ptr, positions, in_range, kv_head,
            block_size, stride_word_block, stride_word_slot, stride_word_head, stride_scale_block, stride_scale_slot,
            stride_scale_head, QUARTER,
        )  # fmt: skip
        visible = in_range & (positions >= window_start)
        m, l, acc0, acc1, acc2, acc3 = attend_fp8_words(
            q0, q1, q2, q3, m, l, acc0, acc1, acc2, acc3, k, v, k_scale, v_scale, visible[None, :], qk_scale,
            UPCAST_DOT, DOT_PRECISION, PTX_CONVERT,
        )  # fmt: skip
    return m, l, acc0, acc1, acc2, acc3


@triton.jit
def load_fp8_words_tile(
    k_words_ptr,
    v_words_ptr,  # [num_blocks, block_size, num_kv_heads, head_dim // 4] int32 views of the cache
    k_scale_ptr,
    v_scale_ptr,  # [num_blocks, block_size, num_kv_heads] float32
    block_table_ptr,  # the sequence's row of block_tables (int32)
    positions,  # [BLOCK_N] key positions of the tile
    in_range,  # [BLOCK_N] which of them may be loaded
    kv_head,
    block_size,
    stride_word_block,
    stride_word_slot,
    stride_word_head,
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,
    QUARTER: tl.constexpr,
):
    """A tile's K and V words [BLOCK_N, QUARTER] and their per-token scales [BLOCK_N] (0 where not in range)."""
    blocks = tl.load(block_table_ptr + positions // block_size, mask=in_range, other=0).to(tl.int64)
    in_block = (positions % block_size).to(tl.int64)
    tokens = blocks * stride_word_block + in_block * stride_word_slot + kv_head * stride_word_head
    offsets = tokens[:, None] + tl.arange(0, QUARTER)[None, :]
    k = tl.load(k_words_ptr + offsets, mask=in_range[:, None], other=0)
    v = tl.load(v_words_ptr + offsets, mask=in_range[:, None], other=0)
    scale_offsets = blocks * stride_scale_block + in_block * stride_scale_slot + kv_head * stride_scale_head
    k_scale = tl.load(k_scale_ptr + scale_offsets, mask=in_range, other=0.0)
    v_scale = tl.load(v_scale_ptr + scale_offsets, mask=in_range, other=0.0)
    return k, v, k_scale, v_scale


@triton.jit
def attend_fp8_words_rows(
    out_ptr,
    q_ptr,
    k_words_ptr,
    v_words_ptr,  # the caches as int32 words (as_words)
    k_scale_ptr,
    v_scale_ptr,
    block_table_ptr,
    m,
    l,  # [M] the running max and sum, as the kernel starts them
    tokens,  # [M] int64 row of each program row's query token
    heads,  # [M] its query head
    row_valid,  # [M] rows that hold a query (not padding)
    query_positions,  # [M] each row's position in its sequence
    start,
    end,  # keys [start, end) in tiles of BLOCK_N from start
    kv_head,
    qk_scale,
    sliding_window,
    stride_q_token,
    stride_q_head,
    stride_out_token,
    stride_out_head,
    stride_word_block,
    stride_word_slot,
    stride_word_head,
    stride_scale_block,
    stride_scale_slot,
    stride_scale_head,
    QUARTER: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    PTX_CONVERT: tl.constexpr,
):
    """A prefill_attention program's rows over an FP8 cache read as words: the query and output by quarters
    (dims j::4), each tile converted in registers, the dots in fp16 with the query pre-scaled by qk_scale; causal
    (and windowed) per row by position. Stores the rows' outputs."""
    quarter4 = 4 * tl.arange(0, QUARTER)[None, :]  # dims 4c of each quarter
    q_rows = tokens[:, None] * stride_q_token + heads[:, None] * stride_q_head + quarter4
    q0, q1, q2, q3 = load_quarters(q_ptr, q_rows, row_valid[:, None], 1, 0.0)
    q0, q1 = (q0.to(tl.float32) * qk_scale).to(tl.float16), (q1.to(tl.float32) * qk_scale).to(tl.float16)
    q2, q3 = (q2.to(tl.float32) * qk_scale).to(tl.float16), (q3.to(tl.float32) * qk_scale).to(tl.float16)
    acc0 = tl.zeros([q0.shape[0], QUARTER], tl.float32)
    acc1 = tl.zeros([q0.shape[0], QUARTER], tl.float32)
    acc2 = tl.zeros([q0.shape[0], QUARTER], tl.float32)
    acc3 = tl.zeros([q0.shape[0], QUARTER], tl.float32)
    for tile_start in range(start, end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        in_context = positions < end
        visible = causal_visible(positions, in_context, query_positions, sliding_window, HAS_WINDOW)
        k, v, k_scale, v_scale = load_fp8_words_tile(
            k_words_ptr, v_words_ptr, k_scale_ptr, v_scale_ptr, block_table_ptr, positions, in_context, kv_head,
            BLOCK_SIZE, stride_word_block, stride_word_slot, stride_word_head, stride_scale_block, stride_scale_slot,
            stride_scale_head, QUARTER,
        )  # fmt: skip
        m, l, acc0, acc1, acc2, acc3 = attend_fp8_words(
            q0, q1, q2, q3, m, l, acc0, acc1, acc2, acc3, k, v, k_scale, v_scale, visible, 1.0, UPCAST_DOT,
            DOT_PRECISION, PTX_CONVERT,
        )  # fmt: skip
    inverse = 1.0 / tl.where(l == 0.0, 1.0, l)[:, None]
    out_rows = tokens[:, None] * stride_out_token + heads[:, None] * stride_out_head + quarter4
    store_normalized_quarters(out_ptr + out_rows, acc0, acc1, acc2, acc3, inverse, row_valid[:, None])
