"""FP8-weight GEMV for a single token (M = 1): the batch-1 decode's linears, bound by reading the weights.

The tensor-core GEMM (kernels/fp8_gemm.py) pads one token to a 16-row tile and, with 64-column tiles, gives
qkv and o fewer programs than the H100 has SMs: it read their weights at 36-45% of the memory bandwidth.
Here every program reduces BLOCK_N weight rows over a slice of K with CUDA-core FMAs, and K is split so that
there are about `programs_per_sm` programs per SM (partials summed in a fixed order: deterministic).

    out[n] = w_scale[n] * sum_k w[n, k] * x[k]  (* x_scale when x is FP8)  (+ bias[n])

x is the token's activations in bf16/fp16/fp32 (no quantization: more exact than the GEMM's per-token FP8,
and one launch fewer) or already FP8 with its per-token scale (a fused norm's output).
`fp8_gemv_reference` is the plain-torch version.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kernels.fp8_gemm import _split_k_reduce_kernel, num_sms_of
from kernels.fp8_quant import FP8_DTYPE, SOURCE_DTYPES, check_launchable, is_interpreted, tl, to_output, triton

MAX_SPLIT_K = 16


class GemvConfig(NamedTuple):
    block_n: int = 16  # weight rows per program
    block_k: int = 512  # bytes of each row per step: 8 KB of weights per step and program
    num_warps: int = 8
    programs_per_sm: int = 4  # K is split until the grid has this many programs per SM


DEFAULT_CONFIG = GemvConfig()


@triton.jit
def _fp8_gemv_kernel(
    x_ptr,  # [K] activations (X_IS_FP8: e4m3)
    x_scale_ptr,  # [1] float32 (X_IS_FP8)
    w_ptr,  # [N, K] float8_e4m3fn, unit column stride
    w_scale_ptr,  # [N] float32
    bias_ptr,  # [N] (HAS_BIAS)
    out_ptr,  # SPLIT_K == 1: [N] output; else [SPLIT_K, N] float32 partials
    N, K, stride_w, k_per_split,
    X_IS_FP8: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    cols = tl.arange(0, BLOCK_K)
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_w
    acc = tl.zeros([BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k = k0 + cols
        k_mask = k < k_end
        w = tl.load(w_rows + k[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0).to(tl.float32)
        x = tl.load(x_ptr + k, mask=k_mask, other=0.0).to(tl.float32)
        acc += tl.sum(w * x[None, :], axis=1)
    if X_IS_FP8:
        acc = acc * tl.load(x_scale_ptr)
    if SPLIT_K == 1:
        acc = acc * tl.load(w_scale_ptr + rows, mask=row_mask, other=0.0)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + rows, to_output(acc, out_ptr.dtype.element_ty, ROUND_IN_FP32), mask=row_mask)
    else:
        tl.store(out_ptr + pid_k * N + rows, acc, mask=row_mask)


def plan_split_k(N: int, K: int, num_sms: int, config: GemvConfig = DEFAULT_CONFIG) -> int:
    """Splits of K so that ceil(N / block_n) * splits reaches programs_per_sm per SM, each split at least
    two block_k steps long."""
    row_programs = triton.cdiv(N, config.block_n)
    wanted = triton.cdiv(config.programs_per_sm * num_sms, row_programs)
    return max(1, min(MAX_SPLIT_K, wanted, K // (2 * config.block_k)))


def fp8_gemv(
    x: torch.Tensor,  # [1, K] bf16/fp16/fp32, or float8_e4m3fn with x_scale
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn, unit column stride
    w_scales: torch.Tensor,  # [N] float32
    bias: torch.Tensor | None = None,  # [N]
    x_scale: torch.Tensor | None = None,  # [1] float32, only for an FP8 x
    out_dtype: torch.dtype | None = None,  # default x's dtype (bfloat16 for an FP8 x)
    config: GemvConfig = DEFAULT_CONFIG,  # tuning (benchmarks/fp8_gemv.py --sweep)
) -> torch.Tensor:  # [1, N]
    """One token through an FP8-weight linear; ValueError on wrong shapes, dtypes, strides or devices."""
    what = "fp8_gemv"
    is_fp8 = x.dtype == FP8_DTYPE
    _check(x, w_fp8, w_scales, bias, x_scale, is_fp8, what)
    tensors = [t for t in (x, w_fp8, w_scales, bias, x_scale) if t is not None]
    check_launchable(_fp8_gemv_kernel, what, *tensors)
    N, K = w_fp8.shape
    out_dtype = out_dtype or (torch.bfloat16 if is_fp8 else x.dtype)
    out = torch.empty((1, N), dtype=out_dtype, device=x.device)
    split_k = plan_split_k(N, K, num_sms_of(x.device), config)
    k_per_split = triton.cdiv(triton.cdiv(K, split_k), config.block_k) * config.block_k
    split_k = triton.cdiv(K, k_per_split)  # every split non-empty
    partials = torch.empty((split_k, 1, N), dtype=torch.float32, device=x.device) if split_k > 1 else out
    interpreted = is_interpreted(_fp8_gemv_kernel)
    _fp8_gemv_kernel[(triton.cdiv(N, config.block_n), split_k)](
        x, x_scale if is_fp8 else w_scales, w_fp8, w_scales, w_scales if bias is None else bias, partials,
        N, K, w_fp8.stride(0), k_per_split,
        X_IS_FP8=is_fp8, HAS_BIAS=bias is not None, SPLIT_K=split_k, BLOCK_N=config.block_n,
        BLOCK_K=config.block_k, ROUND_IN_FP32=interpreted, num_warps=config.num_warps,
    )
    if split_k > 1:
        block = 1024
        _split_k_reduce_kernel[(triton.cdiv(N, block),)](
            partials, w_scales, w_scales if bias is None else bias, out, 1, N,
            HAS_BIAS=bias is not None, SPLIT_K=split_k, BLOCK=block, ROUND_IN_FP32=interpreted, num_warps=4,
        )
    return out


def _check(x, w_fp8, w_scales, bias, x_scale, is_fp8, what) -> None:
    if w_fp8.dim() != 2 or w_fp8.dtype != FP8_DTYPE or (w_fp8.shape[1] > 1 and w_fp8.stride(1) != 1):
        raise ValueError(f"{what}: w_fp8 must be float8_e4m3fn [N, K] with unit column stride, got "
                         f"{w_fp8.dtype} {tuple(w_fp8.shape)} strides {w_fp8.stride()}")
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
