"""Fused (residual add +) RMSNorm, optionally quantized to FP8 for the GEMM that reads it.

Per row (token), exactly as backends/llm/layers/norms.py computes it in torch:
  x      = x + residual                          (in the input dtype: the sum is rounded to it)
  y      = weight * (x32 * rsqrt(mean(x32^2) + eps)).to(dtype)   (rounded twice, as torch does)
The sum is the new residual. A program keeps whole rows in registers: they are read once (x and residual),
the residual is written once, and the output once. Rows of 4096 elements or more get one program each (as
vLLM's kernel); shorter rows are packed BLOCK_M to a program (~4096 elements), so that small models do not
launch thousands of tiny programs (and the Triton interpreter, which runs programs one by one, stays fast).

Why fuse: unfused, a decoder layer's norm step reads x and residual, writes the sum, reads it back, writes the
normalized rows, and for an FP8 GEMM reads those again to quantize them and writes the FP8 copy. Fused with
`out_fp8=True`, the norm writes the per-token FP8 quantization of y directly (values + float32 scales, the
convention of kernels.fp8_quant.quantize_per_token: scale = max(amax/448, MIN_SCALE), round to nearest even),
so neither the bf16 normalized rows nor a separate quantization kernel exist. The FP8 values are those of
quantize_per_token(y) bit for bit when y is (y is rounded to the input dtype before quantizing).

Residual contract (`rms_norm`): with `residual` given, the kernel overwrites `residual` in place with
x + residual and returns that same tensor as the new residual (no extra allocation, and x is left untouched);
without it, the new residual is `x` itself. Callers use the returned residual only.

Numerics: float32 math; the mean divides and the rsqrt is 1/sqrt_rn, all IEEE-rounded (div_rn), so results
match the torch reference up to fp32 summation order (one unit of the output dtype at most, rarely).
"""

from __future__ import annotations

from typing import NamedTuple

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
    to_output,
    triton,
)
from modelgate.kernels.grid_dependency import allow_dependents_to_launch, pdl_supported

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# A row lives in registers: 32K fp32 elements over 16 warps is 64 per thread (hidden sizes go to 16384).
MAX_HIDDEN = 32768
TILE_ELEMENTS = 4096  # elements per program when rows are short (BLOCK_M rows of BLOCK columns)


class RmsNormOutput(NamedTuple):
    """The normalized rows (or their FP8 quantization) and the new residual (x + residual)."""

    out: torch.Tensor | Fp8Rows  # [num_tokens, hidden] in x's dtype, or Fp8Rows(values, scales)
    residual: torch.Tensor  # [num_tokens, hidden] in x's dtype


@triton.jit
def add_residual(x, residual, dtype: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """x + residual (fp32 values of `dtype`) rounded to `dtype`, as fp32: torch's x + residual; the norm reads
    the rounded sum, which is also the new residual."""
    return to_output(x + residual, dtype, ROUND_IN_FP32).to(tl.float32)


@triton.jit
def inverse_rms(sum_squares, hidden, eps):
    """1 / sqrt(sum_squares / hidden + eps), each step IEEE-rounded."""
    mean_square = tl.div_rn(sum_squares, hidden * 1.0)
    return tl.div_rn(tl.full(mean_square.shape, 1.0, tl.float32), tl.sqrt_rn(mean_square + eps))


@triton.jit
def normalize(x, rstd, weight, dtype: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """weight * (x * rstd).to(dtype), rounded to `dtype` (x, rstd, weight fp32, broadcastable): norms.py's math."""
    normalized = to_output(x * rstd, dtype, ROUND_IN_FP32).to(tl.float32)
    return to_output(normalized * weight, dtype, ROUND_IN_FP32)


@triton.jit
def _rms_norm_kernel(
    x_ptr,  # [num_tokens, hidden] input rows (bf16/fp16/fp32), column stride 1
    residual_ptr,  # [num_tokens, hidden] residual, same dtype (HAS_RESIDUAL): read, then overwritten with the sum
    weight_ptr,  # [hidden] norm weight, same dtype, contiguous
    out_ptr,  # [num_tokens, hidden] output: x's dtype, or float8_e4m3fn when FP8_OUT; contiguous
    scale_ptr,  # [num_tokens] float32 per-token scales (FP8_OUT only)
    num_tokens,  # rows
    hidden,  # elements per row
    stride_x,  # elements between rows of x
    stride_residual,  # elements between rows of residual
    stride_out,  # elements between rows of out
    eps,  # float: added to the mean square
    HAS_RESIDUAL: tl.constexpr,  # x = x + residual first, and store it into residual
    FP8_OUT: tl.constexpr,  # store the per-token FP8 quantization of the output instead of the output
    FP8_MAX: tl.constexpr,  # 448
    MIN_SCALE: tl.constexpr,  # lower bound of a scale
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK: tl.constexpr,  # hidden rounded up to a power of two
    ROUND_IN_FP32: tl.constexpr,  # interpreter only: round to nearest even in fp32 before converting
    EARLY_DEPENDENTS: tl.constexpr,  # the next kernel may launch (PDL) and prefetch its weights meanwhile
):
    allow_dependents_to_launch(EARLY_DEPENDENTS)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < num_tokens
    rows = rows.to(tl.int64)[:, None]  # int64: rows * stride passes 2^31 for long prefills
    cols = tl.arange(0, BLOCK)
    mask = row_mask[:, None] & (cols < hidden)[None, :]
    dtype = x_ptr.dtype.element_ty
    x = tl.load(x_ptr + rows * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        residual_ptrs = residual_ptr + rows * stride_residual + cols[None, :]
        residual = tl.load(residual_ptrs, mask=mask, other=0.0).to(tl.float32)
        x = add_residual(x, residual, dtype, ROUND_IN_FP32)
        tl.store(residual_ptrs, x.to(dtype), mask=mask)
    rstd = inverse_rms(tl.sum(x * x, axis=1), hidden, eps)  # [BLOCK_M]
    weight = tl.load(weight_ptr + cols, mask=cols < hidden, other=0.0).to(tl.float32)
    y = normalize(x, rstd[:, None], weight[None, :], dtype, ROUND_IN_FP32)
    out_ptrs = out_ptr + rows * stride_out + cols[None, :]
    if FP8_OUT:
        y = y.to(tl.float32)
        scale = tl.maximum(tl.div_rn(tl.max(tl.abs(y), axis=1), FP8_MAX), MIN_SCALE)  # [BLOCK_M]
        tl.store(out_ptrs, to_e4m3(tl.div_rn(y, scale[:, None]), FP8_MAX, ROUND_IN_FP32), mask=mask)
        tl.store(scale_ptr + rows, scale[:, None], mask=row_mask[:, None])
    else:
        tl.store(out_ptrs, y, mask=mask)


def can_run_on(device: torch.device) -> bool:
    """True when the kernel can run on `device`: CUDA, or the CPU under TRITON_INTERPRET=1."""
    return HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and is_interpreted(_rms_norm_kernel)))


def _check_rows(t: torch.Tensor, name: str, what: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{what}: {name} must be 2-D [num_tokens, hidden], got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise ValueError(f"{what}: {name} must be bfloat16, float16 or float32, got {t.dtype}")
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{what}: {name} needs unit column stride (rows may be strided), got strides {t.stride()}")


def _check_arguments(x, weight, residual, what: str) -> None:
    _check_rows(x, "x", what)
    hidden = x.shape[1]
    if not 0 < hidden <= MAX_HIDDEN:
        raise ValueError(f"{what}: x must have 1..{MAX_HIDDEN} columns (hidden), got shape {tuple(x.shape)}")
    if weight.shape != (hidden,) or weight.dtype != x.dtype:
        raise ValueError(f"{what}: weight must be {x.dtype} [{hidden}], got {weight.dtype} {tuple(weight.shape)}")
    if hidden > 1 and weight.stride(0) != 1:
        raise ValueError(f"{what}: weight must be contiguous, got stride {weight.stride()}")
    if residual is not None:
        _check_rows(residual, "residual", what)
        if residual.shape != x.shape or residual.dtype != x.dtype:
            raise ValueError(
                f"{what}: residual must be {x.dtype} {list(x.shape)} like x, "
                f"got {residual.dtype} {list(residual.shape)}"
            )


def rms_norm(
    x: torch.Tensor,  # [num_tokens, hidden] bf16/fp16/fp32, unit column stride
    weight: torch.Tensor,  # [hidden], x's dtype, contiguous
    eps: float,
    residual: torch.Tensor | None = None,  # [num_tokens, hidden], x's dtype: OVERWRITTEN with x + residual
    out_fp8: bool = False,
) -> RmsNormOutput:
    """(normalized rows or their FP8 quantization, new residual): see the module docstring for the math.

    out_fp8=False: out is a new contiguous [num_tokens, hidden] tensor in x's dtype.
    out_fp8=True: out is Fp8Rows(values [num_tokens, hidden] float8_e4m3fn, scales [num_tokens] float32), the
    per-token quantization of the normalized rows, ready for kernels.fp8_gemm.fp8_linear.
    residual, when given, is updated in place (x + residual) and returned; else the new residual is x.
    Any num_tokens including 0; nothing synchronizes with the device (CUDA-graph safe). Raises ValueError
    naming the argument on a shape, dtype, stride or device mismatch.
    """
    what = "rms_norm"
    _check_arguments(x, weight, residual, what)
    tensors = (x, weight) if residual is None else (x, weight, residual)
    check_launchable(_rms_norm_kernel, what, *tensors)
    num_tokens, hidden = x.shape
    out = torch.empty((num_tokens, hidden), dtype=FP8_DTYPE if out_fp8 else x.dtype, device=x.device)
    # Unused by the kernel without out_fp8: an empty tensor keeps the argument list fixed.
    scales = torch.empty((num_tokens if out_fp8 else 0,), dtype=torch.float32, device=x.device)
    new_residual = x if residual is None else residual
    result = RmsNormOutput(Fp8Rows(out, scales) if out_fp8 else out, new_residual)
    if num_tokens == 0:
        return result
    block = triton.next_power_of_2(hidden)
    block_m = max(1, min(triton.next_power_of_2(num_tokens), TILE_ELEMENTS // block))
    _rms_norm_kernel[(triton.cdiv(num_tokens, block_m),)](
        x,
        new_residual,
        weight,
        out,
        scales,
        num_tokens,
        hidden,
        x.stride(0),
        new_residual.stride(0),
        out.stride(0),
        float(eps),
        HAS_RESIDUAL=residual is not None,
        FP8_OUT=out_fp8,
        FP8_MAX=FP8_MAX,
        MIN_SCALE=MIN_SCALE,
        BLOCK_M=block_m,
        BLOCK=block,
        ROUND_IN_FP32=is_interpreted(_rms_norm_kernel),
        EARLY_DEPENDENTS=pdl_supported(_rms_norm_kernel, x.device),
        # ~8 elements per thread: 16-byte bf16 loads, up to 16 warps for long rows.
        num_warps=max(1, min(16, block_m * block // 256)),
    )
    return result


def rms_norm_reference(
    x: torch.Tensor,  # [num_tokens, hidden]
    weight: torch.Tensor,  # [hidden]
    eps: float,
    residual: torch.Tensor | None = None,  # [num_tokens, hidden]; NOT modified
    out_fp8: bool = False,
) -> RmsNormOutput:
    """Plain-torch rms_norm (norms.py's math; any device). The new residual is a new tensor here."""
    if residual is not None:
        x = x + residual
    as_float = x.float()
    normalized = as_float * torch.rsqrt(as_float.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * normalized.to(x.dtype)
    return RmsNormOutput(quantize_per_token_reference(out) if out_fp8 else out, x)
