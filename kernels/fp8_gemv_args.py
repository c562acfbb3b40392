"""The FP8 GEMV's (kernels/fp8_gemv.py) input-norm argument, the checks of its arguments (errors naming the
argument), and its torch reference."""

from __future__ import annotations

from typing import NamedTuple

import torch

from modelgate.kernels.fp8_quant import FP8_DTYPE, SOURCE_DTYPES


class InputNorm(NamedTuple):
    """The GEMV's input is rms_norm(x (+ residual)) (kernels/rms_norm.py's math, bf16/fp16/fp32 x), which the
    GEMV computes itself: the norm's launch before it goes away. Unlike rms_norm, the sum x + residual is
    written to `new_residual`, a separate [1, K] buffer (residual is still being read by other programs)."""

    weight: torch.Tensor  # [K], x's dtype, contiguous
    eps: float
    residual: torch.Tensor | None = None  # [1, K], x's dtype
    new_residual: torch.Tensor | None = None  # [1, K], x's dtype: receives x + residual (given iff residual is)


def check_norm(x, norm: InputNorm, what: str) -> None:
    K = x.shape[1]
    if x.dtype not in SOURCE_DTYPES:
        raise ValueError(f"{what}: a normalized input must be bfloat16, float16 or float32, got {x.dtype}")
    if norm.weight.shape != (K,) or norm.weight.dtype != x.dtype or not norm.weight.is_contiguous():
        raise ValueError(
            f"{what}: norm.weight must be contiguous {x.dtype} [{K}], got "
            f"{norm.weight.dtype} {tuple(norm.weight.shape)}"
        )
    if (norm.residual is None) != (norm.new_residual is None):
        raise ValueError(f"{what}: norm.new_residual goes with norm.residual and only with it")
    for name in ("residual", "new_residual"):
        t = getattr(norm, name)
        if t is not None and (t.shape != (1, K) or t.dtype != x.dtype or not t.is_contiguous()):
            raise ValueError(
                f"{what}: norm.{name} must be a contiguous {x.dtype} [1, {K}], got {t.dtype} {tuple(t.shape)}"
            )
    if norm.new_residual is not None and norm.new_residual.data_ptr() in (x.data_ptr(), norm.residual.data_ptr()):
        raise ValueError(f"{what}: norm.new_residual must not overlap x or norm.residual (they are still read)")


def check_gemv_args(x, w_fp8, w_scales, bias, x_scale, is_fp8, what) -> None:
    if w_fp8.dim() != 2 or w_fp8.dtype != FP8_DTYPE or (w_fp8.shape[1] > 1 and w_fp8.stride(1) != 1):
        raise ValueError(
            f"{what}: w_fp8 must be float8_e4m3fn [N, K] with unit column stride, got "
            f"{w_fp8.dtype} {tuple(w_fp8.shape)} strides {w_fp8.stride()}"
        )
    N, K = w_fp8.shape
    if x.shape != (1, K) or not x[0].is_contiguous():
        raise ValueError(f"{what}: x must be one contiguous row [1, K={K}], got {tuple(x.shape)}")
    if not is_fp8 and x.dtype not in SOURCE_DTYPES:
        raise ValueError(f"{what}: x must be bfloat16, float16, float32 or float8_e4m3fn, got {x.dtype}")
    if is_fp8 != (x_scale is not None):
        raise ValueError(f"{what}: x_scale ([1] float32) goes with an FP8 x and only with it")
    if x_scale is not None and (x_scale.numel() != 1 or x_scale.dtype != torch.float32):
        raise ValueError(f"{what}: x_scale must be [1] float32, got {x_scale.dtype} {tuple(x_scale.shape)}")
    if w_scales.shape != (N,) or w_scales.dtype != torch.float32:
        raise ValueError(f"{what}: w_scales must be float32 [N={N}], got {w_scales.dtype} {tuple(w_scales.shape)}")
    if bias is not None and (bias.shape != (N,) or not bias.is_contiguous()):
        raise ValueError(f"{what}: bias must be contiguous [N={N}], got {tuple(bias.shape)}")


def fp8_gemv_reference(x, w_fp8, w_scales, bias=None, x_scale=None, out_dtype=None) -> torch.Tensor:
    """Plain torch: the same sum in float32."""
    is_fp8 = x.dtype == FP8_DTYPE
    out_dtype = out_dtype or (torch.bfloat16 if is_fp8 else x.dtype)
    acc = x.float() @ w_fp8.float().T
    if is_fp8:
        acc = acc * x_scale.float()
    acc = acc * w_scales[None, :]
    if bias is not None:
        acc = acc + bias.float()
    return acc.to(out_dtype)
