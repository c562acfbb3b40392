"""SiLU-and-mul (SwiGLU's activation), optionally quantized to FP8 for the down projection.

x: [num_tokens, 2 * I] = gate | up (the fused gate_up_proj output of the Llama MLP); per element, as torch
computes `silu(gate) * up` in the input dtype (rounded twice):
  s = (g32 / (1 + exp(-g32))).to(dtype);   y = (s32 * u32).to(dtype)
Unfused, torch writes silu(gate) and reads it back; fused, x is read once and y written once.

With `out_fp8=True` the kernel writes the per-token FP8 quantization of y (values + float32 scales, exactly
kernels.fp8_quant.quantize_per_token's convention) instead of y, so the down projection's FP8 GEMM reads it
without a separate quantization pass over a bf16 copy. The scale needs the row's amax over all I columns
(I = 14336 for Llama 3 8B), so one program owns a row. Rows up to MAX_SINGLE_TILE columns are held in
registers as one tile (16 warps: 32 values per thread at I = 14336): one pass, every load issued at once.
A row-by-tile walk was latency bound (an H100 profile: 10.9 us per call at one token, 14 dependent tile
steps, where the bytes take 0.1 us). From SPLIT_MIN_TOKENS tokens on, FP8 rows are spread over many
programs instead (kernels/silu_and_mul_split.py: one SM per row is compute bound at Llama sizes).
Longer rows walk twice in BLOCK_FP8-column tiles: the first pass computes y and its amax, the second recomputes y (re-reading gate/up from L2) and stores the FP8 values.
Without FP8 a row splits over several programs (grid [row tiles, column tiles]), so a decode step with few
tokens still spreads over the SMs. Short rows (small models) are packed BLOCK_M to a program (~TILE_ELEMENTS
elements), so that they do not launch thousands of tiny programs (nor does the Triton interpreter, which
runs programs one by one); at Llama sizes BLOCK_M is 1.

Numerics: float32 math; the division is IEEE (div_rn); exp is the device's, so results match the torch
reference to about one unit of the output dtype, and FP8 values match quantize_per_token of the kernel's y.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import (
    FP8_DTYPE,
    FP8_MAX,
    HAS_TRITON,
    MIN_SCALE,
    Fp8Rows,
    check_launchable,
    is_interpreted,
    quantize_per_token_reference,
    tl,
    to_e4m3,
    triton,
)
from modelgate.kernels.silu_and_mul_split import CHUNK as SPLIT_CHUNK
from modelgate.kernels.silu_and_mul_split import silu_and_mul_fp8_split
from modelgate.kernels.silu_mul_tile import check_silu_and_mul_arguments, silu_mul_tile

BLOCK_FP8 = 2048  # columns per tile of the two-pass FP8 row walk (rows longer than MAX_SINGLE_TILE)
MAX_SINGLE_TILE = 16384  # FP8 rows up to this many columns are one register tile (one pass)
BLOCK_PLAIN = 1024  # columns per program without FP8
TILE_ELEMENTS = 2048  # BLOCK_M * BLOCK: rows per program = TILE_ELEMENTS // BLOCK (at least 1)
# FP8 output of at least this many tokens, with rows longer than a split chunk, goes through
# kernels/silu_and_mul_split.py (each row over many programs, same bits); None: never. An H100 at I = 14336
# (benchmarks/silu_and_mul.py): 1.9x faster at 16 tokens, 1.6x at 64, 1.7x at 256, 1.4-1.5x at 1-4k.
SPLIT_MIN_TOKENS: int | None = 1


@triton.jit
def _silu_and_mul_kernel(
    x_ptr,  # [num_tokens, 2 * inter] gate | up (bf16/fp16/fp32), column stride 1
    out_ptr,  # [num_tokens, inter] x's dtype, or float8_e4m3fn when FP8_OUT; contiguous
    scale_ptr,  # [num_tokens] float32 per-token scales (FP8_OUT only)
    num_tokens,  # rows
    inter,  # I: columns of the output (half of x's)
    stride_x,  # elements between rows of x
    stride_out,  # elements between rows of out
    FP8_OUT: tl.constexpr,  # one program per row: amax, then quantize
    SINGLE_TILE: tl.constexpr,  # FP8_OUT with BLOCK >= inter: the row in registers, one pass
    FP8_MAX: tl.constexpr,  # 448
    MIN_SCALE: tl.constexpr,  # lower bound of a scale
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK: tl.constexpr,  # columns per tile (power of two)
    ROUND_IN_FP32: tl.constexpr,  # interpreter only: round to nearest even in fp32 before converting
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < num_tokens
    rows = rows.to(tl.int64)[:, None]  # int64: rows * stride passes 2^31 for long prefills
    x_rows = x_ptr + rows * stride_x
    out_rows = out_ptr + rows * stride_out
    cols = tl.arange(0, BLOCK)
    if FP8_OUT and SINGLE_TILE:
        y = silu_mul_tile(x_rows, row_mask, cols, inter, ROUND_IN_FP32).to(tl.float32)
        scale = tl.maximum(tl.div_rn(tl.max(tl.abs(y), axis=1), FP8_MAX), MIN_SCALE)  # masked elements are 0
        q = to_e4m3(tl.div_rn(y, scale[:, None]), FP8_MAX, ROUND_IN_FP32)
        tl.store(out_rows + cols[None, :], q, mask=row_mask[:, None] & (cols < inter)[None, :])
        tl.store(scale_ptr + rows, scale[:, None], mask=row_mask[:, None])
    elif FP8_OUT:
        amax = tl.zeros([BLOCK_M, BLOCK], dtype=tl.float32)
        for c0 in range(0, inter, BLOCK):
            y = silu_mul_tile(x_rows, row_mask, c0 + cols, inter, ROUND_IN_FP32).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(y))  # masked elements are 0
        scale = tl.maximum(tl.div_rn(tl.max(amax, axis=1), FP8_MAX), MIN_SCALE)  # [BLOCK_M]
        for c0 in range(0, inter, BLOCK):
            y = silu_mul_tile(x_rows, row_mask, c0 + cols, inter, ROUND_IN_FP32).to(tl.float32)
            q = to_e4m3(tl.div_rn(y, scale[:, None]), FP8_MAX, ROUND_IN_FP32)
            tl.store(out_rows + c0 + cols[None, :], q, mask=row_mask[:, None] & (c0 + cols < inter)[None, :])
        tl.store(scale_ptr + rows, scale[:, None], mask=row_mask[:, None])
    else:
        cols = tl.program_id(1) * BLOCK + cols
        y = silu_mul_tile(x_rows, row_mask, cols, inter, ROUND_IN_FP32)
        tl.store(out_rows + cols[None, :], y, mask=row_mask[:, None] & (cols < inter)[None, :])


def can_run_on(device: torch.device) -> bool:
    """True when the kernel can run on `device`: CUDA, or the CPU under TRITON_INTERPRET=1."""
    return HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and is_interpreted(_silu_and_mul_kernel)))


def silu_and_mul(
    x: torch.Tensor,  # [num_tokens, 2 * intermediate] gate | up, bf16/fp16/fp32, unit column stride
    out_fp8: bool = False,
    *,
    spread: bool | None = None,  # FP8 rows over many programs (silu_and_mul_split.py) or one each; None: by size
) -> torch.Tensor | Fp8Rows:
    """silu(gate) * up: [num_tokens, intermediate] in x's dtype (contiguous), or with out_fp8=True its per-token
    FP8 quantization Fp8Rows(values [num_tokens, intermediate] float8_e4m3fn, scales [num_tokens] float32).
    Both FP8 paths give the same bits; `spread` picks one (tests, benchmarks), None leaves it to
    SPLIT_MIN_TOKENS and the row length.

    Any num_tokens including 0; nothing synchronizes with the device (CUDA-graph safe). Raises ValueError
    naming the argument on a wrong shape, dtype, stride or device.
    """
    what = "silu_and_mul"
    check_silu_and_mul_arguments(x, what)
    check_launchable(_silu_and_mul_kernel, what, x)
    num_tokens, inter = x.shape[0], x.shape[1] // 2
    if spread is None:
        spread = SPLIT_MIN_TOKENS is not None and num_tokens >= SPLIT_MIN_TOKENS and inter > SPLIT_CHUNK
    if out_fp8 and spread:
        return silu_and_mul_fp8_split(x)
    out = torch.empty((num_tokens, inter), dtype=FP8_DTYPE if out_fp8 else x.dtype, device=x.device)
    # Unused by the kernel without out_fp8: an empty tensor keeps the argument list fixed.
    scales = torch.empty((num_tokens if out_fp8 else 0,), dtype=torch.float32, device=x.device)
    if num_tokens > 0:
        single_tile = out_fp8 and triton.next_power_of_2(inter) <= MAX_SINGLE_TILE
        if single_tile:
            block = triton.next_power_of_2(inter)
        else:
            block = min(triton.next_power_of_2(inter), BLOCK_FP8 if out_fp8 else BLOCK_PLAIN)
        block_m = max(1, min(triton.next_power_of_2(num_tokens), TILE_ELEMENTS // block))
        row_tiles = triton.cdiv(num_tokens, block_m)
        grid = (row_tiles,) if out_fp8 else (row_tiles, triton.cdiv(inter, block))
        _silu_and_mul_kernel[grid](
            x,
            out,
            scales,
            num_tokens,
            inter,
            x.stride(0),
            out.stride(0),
            FP8_OUT=out_fp8,
            SINGLE_TILE=single_tile,
            FP8_MAX=FP8_MAX,
            MIN_SCALE=MIN_SCALE,
            BLOCK_M=block_m,
            BLOCK=block,
            ROUND_IN_FP32=is_interpreted(_silu_and_mul_kernel),
            # ~8 elements per thread per tile (16-byte bf16 loads of gate and of up); a row-sized tile takes up
            # to 16 warps so that it stays within ~64 registers of values per thread.
            num_warps=max(1, min(16 if single_tile else 8, block_m * block // 256)),
        )
    return Fp8Rows(out, scales) if out_fp8 else out


def silu_and_mul_reference(x: torch.Tensor, out_fp8: bool = False) -> torch.Tensor | Fp8Rows:
    """Plain torch (the Llama MLP's `silu(gate) * up`), then quantize_per_token_reference when out_fp8."""
    gate, up = x.chunk(2, dim=-1)
    y = torch.nn.functional.silu(gate) * up
    return quantize_per_token_reference(y) if out_fp8 else y
