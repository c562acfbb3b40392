"""What the SiLU-and-mul kernels share: the product of a tile (rounded like torch), the gate | up GEMMs' epilogue
and the argument checks.

kernels/silu_and_mul.py (one program per FP8 row) and kernels/silu_and_mul_split.py (rows spread over
programs) must compute the same y bit for bit, so they compute it here.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import tl, to_output, triton

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@triton.jit
def silu_mul_tile(x_rows, row_mask, cols, inter, ROUND_IN_FP32: tl.constexpr):
    """silu(gate) * up of a [BLOCK_M, BLOCK] tile (x_rows [BLOCK_M, 1] row pointers, cols [BLOCK] columns),
    rounded like torch (to x's dtype twice); returned in x's dtype, 0 where masked."""
    dtype = x_rows.dtype.element_ty
    mask = row_mask[:, None] & (cols < inter)[None, :]
    gate = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_rows + inter + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return silu_mul_values(gate, up, dtype, ROUND_IN_FP32)


@triton.jit
def silu_mul_values(gate, up, dtype: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """silu(gate) * up of float32 values that are exact in `dtype`, rounded like torch: silu to `dtype`, then
    the product; returned in `dtype`. The GEMM epilogue of kernels/fp8_gemm_silu.py uses it too."""
    silu = to_output(tl.div_rn(gate, 1.0 + tl.exp(-gate)), dtype, ROUND_IN_FP32).to(tl.float32)
    return to_output(silu * up, dtype, ROUND_IN_FP32)


def check_silu_and_mul_arguments(x: torch.Tensor, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{what}: x must be 2-D [num_tokens, 2 * intermediate], got shape {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise ValueError(f"{what}: x must be bfloat16, float16 or float32, got {x.dtype}")
    if x.shape[1] == 0 or x.shape[1] % 2:
        raise ValueError(f"{what}: x must have an even, non-zero number of columns (gate | up), got {tuple(x.shape)}")
    if x.stride(1) != 1:
        raise ValueError(f"{what}: x needs unit column stride (rows may be strided), got strides {x.stride()}")


@triton.jit
def silu_epilogue(
    acc_gate,  # [BLOCK_M, BLOCK_N] float32 sums of gate columns offs_n
    acc_up,  # [BLOCK_M, BLOCK_N] float32 sums of up columns offs_n
    offs_m,
    offs_n,
    rows_gate,  # [BLOCK_N] int64 weight rows whose channel scales apply to acc_gate (in range)
    rows_up,  # [BLOCK_N] int64, likewise for acc_up
    pid_n,  # this tile's piece of the row (amax column)
    M,
    INTER,
    num_pieces,
    a_scale_ptrs,  # [BLOCK_M] pointers to the rows' token scales (in range)
    b_scale_ptr,
    y_ptr,
    amax_ptr,
    ROUND_IN_FP32: tl.constexpr,
):
    """The unfused GEMM's epilogue twice (token scale, then channel scale, one rounding to y's dtype), then
    SiLU-and-mul; stores y's rows < M and columns < INTER, and each row's max |y| over them at piece pid_n.
    The gate | up GEMMs' epilogue (kernels/fp8_gemm_silu.py, cp.async and TMA)."""
    y_dtype = y_ptr.dtype.element_ty
    a_scale = tl.load(a_scale_ptrs)[:, None]
    acc_gate = acc_gate * a_scale * tl.load(b_scale_ptr + rows_gate)[None, :]
    acc_up = acc_up * a_scale * tl.load(b_scale_ptr + rows_up)[None, :]
    gate_values = to_output(acc_gate, y_dtype, ROUND_IN_FP32).to(tl.float32)
    up_values = to_output(acc_up, y_dtype, ROUND_IN_FP32).to(tl.float32)
    y = silu_mul_values(gate_values, up_values, y_dtype, ROUND_IN_FP32)
    row_in = offs_m < M
    col_in = offs_n < INTER
    tl.store(y_ptr + offs_m.to(tl.int64)[:, None] * INTER + offs_n[None, :], y, mask=row_in[:, None] & col_in[None, :])
    magnitude = tl.where(col_in[None, :], tl.abs(y.to(tl.float32)), 0.0)
    tl.store(amax_ptr + offs_m.to(tl.int64) * num_pieces + pid_n, tl.max(magnitude, axis=1), mask=row_in)
