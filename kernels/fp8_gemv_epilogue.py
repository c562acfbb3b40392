"""The FP8 GEMV's epilogue (kernels/fp8_gemv.py): the split partials summed in order, scales and bias applied,
and the output written, with SiLU-and-mul for a fused gate | up projection."""

from __future__ import annotations

from modelgate.kernels.fp8_quant import tl, to_output, triton


@triton.jit
def linear_epilogue(
    acc, rows, row_mask, x_scale_ptr, w_scale_ptr, bias_ptr, X_IS_FP8: tl.constexpr, HAS_BIAS: tl.constexpr
):
    """Sums over all of K -> the linear's fp32 output: x_scale, then w_scale, then bias (the reference's order)."""
    if X_IS_FP8:
        acc = acc * tl.load(x_scale_ptr)
    acc = acc * tl.load(w_scale_ptr + rows, mask=row_mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
    return acc


@triton.jit
def write_output(
    acc,
    acc_up,
    rows,
    row_mask,
    N_OUT,
    x_scale_ptr,
    w_scale_ptr,
    bias_ptr,
    out_ptr,
    X_IS_FP8: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU_AND_MUL: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    out_ty = out_ptr.dtype.element_ty
    y = linear_epilogue(acc, rows, row_mask, x_scale_ptr, w_scale_ptr, bias_ptr, X_IS_FP8, HAS_BIAS)
    if SILU_AND_MUL:
        # gate and up rounded to the output dtype, then silu and the product each rounded: the unfused path
        # (this GEMV's [1, 2I] output, then kernels/silu_and_mul.py) computes exactly these values.
        up = linear_epilogue(acc_up, rows + N_OUT, row_mask, x_scale_ptr, w_scale_ptr, bias_ptr, X_IS_FP8, HAS_BIAS)
        gate = to_output(y, out_ty, ROUND_IN_FP32).to(tl.float32)
        up = to_output(up, out_ty, ROUND_IN_FP32).to(tl.float32)
        silu = to_output(tl.div_rn(gate, 1.0 + tl.exp(-gate)), out_ty, ROUND_IN_FP32).to(tl.float32)
        y = silu * up
    tl.store(out_ptr + rows, to_output(y, out_ty, ROUND_IN_FP32), mask=row_mask)


@triton.jit
def sum_partials(p_ptrs, row_mask, N, SPLIT_K: tl.constexpr):
    """Sum of the SPLIT_K partials [SPLIT_K, N] at p_ptrs (this row block), in split order."""
    acc = tl.zeros(p_ptrs.shape, tl.float32)
    for s in tl.static_range(SPLIT_K):
        # .cg: read from L2, the point of coherence, not L1: other SMs wrote these partials, and the L1 of this
        # SM is not coherent with their stores; an L1 line of these addresses cached earlier would be stale.
        # (Each partial is read once: L1 would not help anyway.)
        acc += tl.load(p_ptrs + s * N, mask=row_mask, other=0.0, cache_modifier=".cg")
    return acc
