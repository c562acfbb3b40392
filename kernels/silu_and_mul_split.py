"""SiLU-and-mul quantized to FP8 with each row spread over many programs: two column-parallel kernels.

kernels/silu_and_mul.py quantizes a row in one program, because the per-token scale needs the amax of all I
columns. At Llama 3 8B (I = 14336) that program does ~50 instructions for each of the row's 14336 values on
one SM: an H100 profile of the decode step measured 9 us per call at 64 tokens (64 SMs busy, the rest idle)
and 68 us at 1024 tokens (about 3x the bytes' time), where the bytes alone take 1.5 and 24 us.

Here the row is cut into CHUNK-column pieces, one program each (grid [tokens, chunks]):
  1. `_silu_mul_chunks_kernel`: y = silu(gate) * up of its piece, rounded to x's dtype exactly as
     kernels/silu_and_mul.py rounds it; stores y and the piece's amax;
  2. `_quantize_chunks_kernel`: the row's scale from its pieces' amaxes, then its piece of y in FP8.
y makes a round trip through memory (2 + 2 bytes per value on top of the 4 read and 1 written; at decode
sizes it stays in L2), in exchange for every SM working on every row. The values and scales are bit for bit
those of the one-program path (same y, same amax, same division and rounding).
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import (
    FP8_DTYPE,
    FP8_MAX,
    MIN_SCALE,
    Fp8Rows,
    check_launchable,
    is_interpreted,
    tl,
    to_e4m3,
    triton,
)
from modelgate.kernels.silu_mul_tile import check_silu_and_mul_arguments, silu_mul_tile

CHUNK = 2048  # columns per program: 16 values of gate and of up per thread at 4 warps
NUM_WARPS = 4


@triton.jit
def _silu_mul_chunks_kernel(
    x_ptr,  # [num_tokens, 2 * inter] gate | up, column stride 1
    y_ptr,  # [num_tokens, inter] x's dtype, contiguous: silu(gate) * up
    amax_ptr,  # [num_tokens, num_chunks] float32: max |y| of each piece
    inter,
    stride_x,
    num_chunks,
    CHUNK: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    cols = chunk * CHUNK + tl.arange(0, CHUNK)
    row_mask = tl.full([1], 1, tl.int1)
    y = silu_mul_tile(x_ptr + row * stride_x + tl.zeros([1, 1], tl.int64), row_mask, cols, inter, ROUND_IN_FP32)
    tl.store(y_ptr + row * inter + cols[None, :], y, mask=(cols < inter)[None, :])
    tl.store(amax_ptr + row * num_chunks + chunk, tl.max(tl.max(tl.abs(y.to(tl.float32)), axis=1), axis=0))


@triton.jit
def _quantize_chunks_kernel(
    y_ptr,  # [num_tokens, inter] from _silu_mul_chunks_kernel
    amax_ptr,  # [num_tokens, num_chunks] float32
    out_ptr,  # [num_tokens, inter] float8_e4m3fn, contiguous
    scale_ptr,  # [num_tokens] float32
    inter,
    num_chunks,
    CHUNK: tl.constexpr,
    CHUNKS_POW2: tl.constexpr,  # num_chunks rounded up to a power of two
    FP8_MAX: tl.constexpr,
    MIN_SCALE: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    pieces = tl.arange(0, CHUNKS_POW2)
    amax = tl.max(tl.load(amax_ptr + row * num_chunks + pieces, mask=pieces < num_chunks, other=0.0), axis=0)
    scale = tl.maximum(tl.div_rn(amax, FP8_MAX), MIN_SCALE)
    cols = chunk * CHUNK + tl.arange(0, CHUNK)
    mask = cols < inter
    y = tl.load(y_ptr + row * inter + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * inter + cols, to_e4m3(tl.div_rn(y, scale), FP8_MAX, ROUND_IN_FP32), mask=mask)
    if chunk == 0:
        tl.store(scale_ptr + row, scale)


def silu_and_mul_fp8_split(x: torch.Tensor, chunk: int = CHUNK) -> Fp8Rows:
    """silu_and_mul(x, out_fp8=True), the same bits, with each row spread over ceil(I / chunk) programs.

    x: [num_tokens, 2 * I] bf16/fp16/fp32, unit column stride; chunk a power of two >= 16 (tests shrink it).
    Nothing synchronizes with the device (CUDA-graph safe). Raises ValueError naming the argument on a wrong
    shape, dtype, stride or device.
    """
    what = "silu_and_mul"
    check_silu_and_mul_arguments(x, what)
    check_launchable(_silu_mul_chunks_kernel, what, x)
    num_tokens, inter = x.shape[0], x.shape[1] // 2
    out = torch.empty((num_tokens, inter), dtype=FP8_DTYPE, device=x.device)
    scales = torch.empty((num_tokens,), dtype=torch.float32, device=x.device)
    if num_tokens == 0:
        return Fp8Rows(out, scales)
    num_chunks = triton.cdiv(inter, chunk)
    y = torch.empty((num_tokens, inter), dtype=x.dtype, device=x.device)
    amax = torch.empty((num_tokens, num_chunks), dtype=torch.float32, device=x.device)
    interpreted = is_interpreted(_silu_mul_chunks_kernel)
    grid = (num_tokens, num_chunks)
    _silu_mul_chunks_kernel[grid](
        x, y, amax, inter, x.stride(0), num_chunks, CHUNK=chunk, ROUND_IN_FP32=interpreted, num_warps=NUM_WARPS
    )
    return quantize_pieces(y, amax, out, scales, chunk)


def quantize_pieces(y: torch.Tensor, amax: torch.Tensor, out: torch.Tensor, scales: torch.Tensor, chunk: int = CHUNK):
    """y [num_tokens, I] quantized per token into out (e4m3) and scales, each row's scale from its pieces' amaxes
    (amax [num_tokens, pieces] float32: any cut of the row, max |y| over each); `chunk` columns per program.
    For callers that made y and amax (this module, kernels/fp8_gemm_silu.py's GEMM epilogue). Returns them."""
    num_tokens, inter = y.shape
    _quantize_chunks_kernel[(num_tokens, triton.cdiv(inter, chunk))](
        y,
        amax,
        out,
        scales,
        inter,
        amax.shape[1],
        CHUNK=chunk,
        CHUNKS_POW2=triton.next_power_of_2(amax.shape[1]),
        FP8_MAX=FP8_MAX,
        MIN_SCALE=MIN_SCALE,
        ROUND_IN_FP32=is_interpreted(_quantize_chunks_kernel),
        num_warps=NUM_WARPS,
    )
    return Fp8Rows(out, scales)
