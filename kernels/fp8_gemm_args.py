"""Argument checks of the FP8 GEMM entry points (fp8_gemm.py, fp8_gemm_tma.py): errors name the argument."""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import FP8_DTYPE, check_launchable

OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _check_matrix(t: torch.Tensor, name: str, dtypes: tuple, what: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{what}: {name} must be 2-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{what}: {name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}")
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{what}: {name} needs unit column stride (rows may be strided), got strides {t.stride()}")


def _check_vector(t: torch.Tensor | None, name: str, length: int, dtypes: tuple, what: str) -> None:
    if t is None:
        return
    if t.shape != (length,):
        raise ValueError(f"{what}: {name} must have shape [{length}], got {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{what}: {name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}")
    if length > 1 and t.stride(0) != 1:
        raise ValueError(f"{what}: {name} must be contiguous, got stride {t.stride()}")


def check_gemm_args(x, x_scales, w_fp8, w_scales, bias, out_dtype, x_dtypes, what: str, kernel) -> None:
    """ValueError naming the argument when shapes, dtypes, strides or devices do not fit an FP8 GEMM call of
    `kernel` (x [M, K] of x_dtypes, w_fp8 [N, K] e4m3, x_scales [M] / w_scales [N] float32, bias [N])."""
    _check_matrix(x, "x", x_dtypes, what)
    _check_matrix(w_fp8, "w_fp8", (FP8_DTYPE,), what)
    (M, K), N = x.shape, w_fp8.shape[0]
    if w_fp8.shape[1] != K:
        raise ValueError(f"{what}: x is [M, K] = {list(x.shape)} but w_fp8 is [N, K] = {list(w_fp8.shape)}")
    if K == 0:
        raise ValueError(f"{what}: K must be > 0")
    _check_vector(x_scales, "x_scales", M, (torch.float32,), what)
    _check_vector(w_scales, "w_scales", N, (torch.float32,), what)
    _check_vector(bias, "bias", N, OUT_DTYPES, what)
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"{what}: out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    tensors = [t for t in (x, x_scales, w_fp8, w_scales, bias) if t is not None]
    check_launchable(kernel, what, *tensors)
