"""What both SiLU-and-mul launchers share: the product of a tile (rounded like torch) and the argument checks.

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
