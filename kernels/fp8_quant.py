"""FP8 (e4m3) quantization: dynamic per-token activation scales and per-output-channel weight scales.

Both are the same operation on the rows of a matrix: scale[r] = max(amax(|row r|) / 448, MIN_SCALE) and
q[r, k] = saturate(row[r, k] / scale[r]) as float8_e4m3fn (round to nearest even), so that
q[r, k] * scale[r] ~= row[r, k]. For activations the rows are tokens ([M, K]); for a weight [N, K] they are
output channels. One Triton kernel does both; `*_reference` are the plain-torch versions.

Invariants of the results (kernel and reference alike):
- scales are float32, one per row, strictly positive (MIN_SCALE keeps an all-zero row finite: its q is 0);
- |q| <= 448 (the e4m3 maximum); an input NaN gives NaN in its row, nothing else is checked;
- the division is IEEE round-to-nearest (`tl.div_rn`) and the fp32 -> e4m3 conversion rounds to nearest
  even, so the kernel's q equals the reference's bit for bit.

The interpreter's own fp32 -> fp8 conversion (triton 3.9) rounds ties away from zero and drops the carry
when rounding up crosses a power of two (127.5 -> 64 instead of 128). Under TRITON_INTERPRET=1 the kernels
therefore round to the e4m3 grid in fp32 first (`round_to_e4m3`, ROUND_IN_FP32), so the conversion is exact;
on a GPU they use the hardware's conversion (cvt.rn.satfinite), which needs no help.

FP8 checkpoints that already carry `weight_scale` load as they are through `fp8_weight_from_checkpoint`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU installs off Linux x86_64: the torch references below still work.
    HAS_TRITON = False

    class _NoTriton:
        """Lets the @triton.jit definitions import; launching them raises (see check_launchable)."""

        constexpr = object

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _NoTriton()

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
# The smallest scale: an all-zero (or tiny) row still gets a finite, positive scale (as vLLM does).
MIN_SCALE = 1.0 / (FP8_MAX * 512.0)
SOURCE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# Rows up to this many columns stay in registers (one read); longer rows are read twice (amax, then quantize).
MAX_SINGLE_PASS_K = 16384


class Fp8Rows(NamedTuple):
    """A row-quantized matrix: values[r, :] * scales[r] ~= the original row r."""

    values: torch.Tensor  # [rows, K] float8_e4m3fn
    scales: torch.Tensor  # [rows] float32, > 0


class Fp8Weight(NamedTuple):
    """An FP8 linear weight with one scale per output channel: weight[n, :] * scales[n] ~= W[n, :]."""

    weight: torch.Tensor  # [N, K] float8_e4m3fn, contiguous
    scales: torch.Tensor  # [N] float32, contiguous


@triton.jit
def round_to_e4m3(x):
    """x: fp32 with |x| <= 448 -> the nearest e4m3 value (ties to even), still fp32."""
    a = tl.abs(x)
    # Normals: keep 3 of fp32's 23 mantissa bits, ties to even; a carry correctly bumps the exponent.
    bits = a.to(tl.int32, bitcast=True)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576
    normal = bits.to(tl.float32, bitcast=True)
    # Subnormals (|x| < 2^-6) are multiples of 2^-9: adding 2^23 rounds a*2^9 to an integer, ties to even,
    # in one rounding (scaling by powers of two is exact).
    subnormal = ((a * 512.0 + 8388608.0) - 8388608.0) * 0.001953125
    r = tl.where(a < 0.015625, subnormal, normal)
    # The sign bit, so that -0.0 stays -0.0.
    return tl.where(x.to(tl.int32, bitcast=True) < 0, -r, r)


@triton.jit
def to_e4m3(x, FP8_MAX: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """x: fp32 (already divided by its scale) -> saturated float8e4nv, round to nearest even."""
    x = tl.clamp(x, -FP8_MAX, FP8_MAX)
    if ROUND_IN_FP32:
        x = round_to_e4m3(x)
    return x.to(tl.float8e4nv)


@triton.jit
def to_output(acc, OUT_TY: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """acc (fp32) -> OUT_TY, round to nearest even. The interpreter truncates fp32 -> bf16, so under it
    (ROUND_IN_FP32) the rounding is done on the bits first and the conversion is exact."""
    if ROUND_IN_FP32:
        if OUT_TY == tl.bfloat16:
            bits = acc.to(tl.int32, bitcast=True)
            acc = ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
    return acc.to(OUT_TY)


@triton.jit
def _quantize_rows_kernel(
    x_ptr,  # [M, K] source rows (bf16/fp16/fp32); column stride 1, row stride stride_xm
    q_ptr,  # [M, K] float8_e4m3fn output; column stride 1, row stride stride_qm
    scale_ptr,  # [M] float32 output, one scale per row
    M,  # number of rows
    K,  # number of columns
    stride_xm,  # elements between rows of x
    stride_qm,  # elements between rows of q
    FP8_MAX: tl.constexpr,  # largest finite e4m3 value (448)
    MIN_SCALE: tl.constexpr,  # lower bound of a scale
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_K: tl.constexpr,  # columns per step (power of two)
    SINGLE_PASS: tl.constexpr,  # K <= BLOCK_K: the rows stay in registers between amax and quantize
    ROUND_IN_FP32: tl.constexpr,  # round to the e4m3 grid before converting (the interpreter's conversion is off)
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    # int64: M * stride can pass 2^31 for long prefills.
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    cols = tl.arange(0, BLOCK_K)
    if SINGLE_PASS:
        mask = row_mask[:, None] & (cols[None, :] < K)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.div_rn(tl.max(tl.abs(x), axis=1), FP8_MAX), MIN_SCALE)
        q = to_e4m3(tl.div_rn(x, scale[:, None]), FP8_MAX, ROUND_IN_FP32)
        tl.store(q_rows + cols[None, :], q, mask=mask)
    else:
        amax = tl.zeros([BLOCK_M], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            mask = row_mask[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
        scale = tl.maximum(tl.div_rn(amax, FP8_MAX), MIN_SCALE)
        for k0 in range(0, K, BLOCK_K):
            mask = row_mask[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            q = to_e4m3(tl.div_rn(x, scale[:, None]), FP8_MAX, ROUND_IN_FP32)
            tl.store(q_rows + k0 + cols[None, :], q, mask=mask)
    tl.store(scale_ptr + rows, scale, mask=row_mask)


def is_interpreted(kernel) -> bool:
    """True when `kernel` was built under TRITON_INTERPRET=1 (it then runs on CPU tensors)."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_launchable(kernel, what: str, *tensors: torch.Tensor) -> None:
    """Raise ValueError unless the tensors can feed `kernel`: one CUDA device, or the CPU under the interpreter."""
    if not HAS_TRITON:
        raise RuntimeError(f"{what}: triton is not installed; use the *_reference functions on this machine")
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{what}: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type == "cuda" or (device.type == "cpu" and is_interpreted(kernel)):
        return
    raise ValueError(f"{what}: tensors must be on a CUDA device (CPU only under TRITON_INTERPRET=1), got {device}")


def _check_rows(x: torch.Tensor, name: str, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{what}: {name} must be 2-D [rows, K], got shape {tuple(x.shape)}")
    if x.dtype not in SOURCE_DTYPES:
        raise ValueError(f"{what}: {name} must be bfloat16, float16 or float32, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{what}: {name} must have K > 0 columns, got shape {tuple(x.shape)}")
    if x.shape[1] > 1 and x.stride(1) != 1:
        raise ValueError(f"{what}: {name} needs unit column stride (rows may be strided), got strides {x.stride()}")


def quantize_rows_config(num_rows: int, num_cols: int) -> dict:
    """Launch parameters: the whole row in registers up to MAX_SINGLE_PASS_K columns, ~4K elements per program."""
    block_k = min(triton.next_power_of_2(num_cols), MAX_SINGLE_PASS_K)
    block_m = max(1, min(triton.next_power_of_2(max(num_rows, 1)), 4096 // block_k, 16))
    # ~16 elements per thread: 16-byte bf16 loads, a few in flight per thread.
    num_warps = max(1, min(16, block_m * block_k // 512))
    return dict(BLOCK_M=block_m, BLOCK_K=block_k, SINGLE_PASS=num_cols <= block_k, num_warps=num_warps)


def _quantize_rows(x: torch.Tensor, name: str, what: str) -> Fp8Rows:
    _check_rows(x, name, what)
    check_launchable(_quantize_rows_kernel, what, x)
    num_rows, num_cols = x.shape
    q = torch.empty((num_rows, num_cols), dtype=FP8_DTYPE, device=x.device)
    scales = torch.empty((num_rows,), dtype=torch.float32, device=x.device)
    if num_rows == 0:
        return Fp8Rows(q, scales)
    config = quantize_rows_config(num_rows, num_cols)
    grid = (triton.cdiv(num_rows, config["BLOCK_M"]),)
    _quantize_rows_kernel[grid](
        x,
        q,
        scales,
        num_rows,
        num_cols,
        x.stride(0),
        q.stride(0),
        FP8_MAX=FP8_MAX,
        MIN_SCALE=MIN_SCALE,
        ROUND_IN_FP32=is_interpreted(_quantize_rows_kernel),
        **config,
    )
    return Fp8Rows(q, scales)


def quantize_per_token(x: torch.Tensor) -> Fp8Rows:
    """Dynamic per-token FP8 quantization of activations.

    x: [M, K] bfloat16/float16/float32 on CUDA (CPU under TRITON_INTERPRET=1), unit column stride (a row
    stride larger than K is fine, e.g. a slice of a fused projection's output).
    Returns (values [M, K] float8_e4m3fn contiguous, scales [M] float32 > 0) with values * scales[:, None] ~= x.
    """
    return _quantize_rows(x, "x", "quantize_per_token")


def quantize_weight_per_channel(w: torch.Tensor) -> Fp8Weight:
    """Per-output-channel FP8 quantization of a linear weight, run once at load.

    w: [N, K] bfloat16/float16/float32 (nn.Linear layout: out_features x in_features), unit column stride.
    Returns (weight [N, K] float8_e4m3fn contiguous, scales [N] float32 > 0).
    """
    values, scales = _quantize_rows(w, "w", "quantize_weight_per_channel")
    return Fp8Weight(values, scales)


def quantize_rows_reference(x: torch.Tensor) -> Fp8Rows:
    """Plain-torch row quantization (any device, float32 math, torch's round-to-nearest-even conversion)."""
    x32 = x.float()
    amax = x32.abs().amax(dim=1) if x32.shape[1] else x32.new_zeros(x32.shape[0])
    # A tensor divisor: torch's CUDA division by a Python scalar multiplies by its reciprocal, which is
    # 1 ULP off IEEE division; the kernels divide with div_rn.
    scales = torch.clamp(amax / torch.full_like(amax, FP8_MAX), min=MIN_SCALE)
    values = torch.clamp(x32 / scales[:, None], -FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return Fp8Rows(values, scales)


def quantize_per_token_reference(x: torch.Tensor) -> Fp8Rows:
    """Torch reference of quantize_per_token. x: [M, K]."""
    return quantize_rows_reference(x)


def quantize_weight_per_channel_reference(w: torch.Tensor) -> Fp8Weight:
    """Torch reference of quantize_weight_per_channel (the CPU engine's load path). w: [N, K]."""
    values, scales = quantize_rows_reference(w)
    return Fp8Weight(values, scales)


def fp8_weight_from_checkpoint(weight: torch.Tensor, weight_scale: torch.Tensor | None = None) -> Fp8Weight:
    """An Fp8Weight from a checkpoint tensor, for the weight loader.

    - bf16/fp16/fp32 `weight` [N, K] without `weight_scale`: quantized per output channel (the kernel on CUDA,
      the torch reference elsewhere).
    - float8_e4m3fn `weight` [N, K] with `weight_scale` (per-tensor: shape () or [1]; per-channel: [N] or
      [N, 1], as in compressed-tensors / vLLM FP8 checkpoints): kept as it is; the scale becomes float32 [N].
    Block-wise scales and other FP8 formats are refused with a ValueError.
    """
    what = "fp8_weight_from_checkpoint"
    if weight.dim() != 2:
        raise ValueError(f"{what}: weight must be 2-D [N, K], got shape {tuple(weight.shape)}")
    num_rows = weight.shape[0]
    if weight.dtype == FP8_DTYPE:
        if weight_scale is None:
            raise ValueError(f"{what}: a float8_e4m3fn weight needs its weight_scale tensor")
        if (
            weight_scale.numel() not in (1, num_rows)
            or weight_scale.dim() > 2
            or (weight_scale.dim() == 2 and weight_scale.shape[1] != 1)
        ):
            raise ValueError(
                f"{what}: weight_scale must be per-tensor (shape () or [1]) or per-channel ([{num_rows}] or "
                f"[{num_rows}, 1]), got shape {tuple(weight_scale.shape)} (block-wise scales are not supported)"
            )
        scales = weight_scale.to(device=weight.device, dtype=torch.float32).reshape(-1).expand(num_rows)
        return Fp8Weight(weight.contiguous(), scales.contiguous())
    if weight.dtype not in SOURCE_DTYPES:
        raise ValueError(f"{what}: weight must be float8_e4m3fn, bfloat16, float16 or float32, got {weight.dtype}")
    if weight_scale is not None:
        raise ValueError(f"{what}: weight_scale given for a {weight.dtype} weight (only FP8 weights carry scales)")
    if weight.is_cuda and HAS_TRITON:
        return quantize_weight_per_channel(weight.contiguous())
    return quantize_weight_per_channel_reference(weight)
