"""FP8 (e4m3) W8A8 GEMM: out[m, n] = (sum_k xq[m, k] * wq[n, k]) * x_scale[m] * w_scale[n] (+ bias[n]).

Activations carry one dynamic scale per token (kernels.fp8_quant.quantize_per_token), weights one scale per
output channel (quantized at load, or read from an FP8 checkpoint). Products of two e4m3 values are exact in
fp32 and the sums accumulate in fp32 registers (on Hopper the tensor cores' own sums are shorter than fp32:
Triton's default fast accumulation; `precise_accumulation=True` adds every BLOCK_K slice into the fp32
accumulator instead); scales and bias are applied once, in the epilogue, and the result is rounded once
to `out_dtype`.

Tile configurations (Fp8GemmConfig) and the rule that picks one per problem (`select_config`) live in
kernels/fp8_gemm_configs.py.

Rows past M or N are read from an in-range row (index modulo M/N) so the loads stay unmasked along M and
N; only the store is masked. K is masked only when K % BLOCK_K != 0 (EVEN_K).

`fp8_linear_from_activations` quantizes per token and multiplies; with fused=True it does both in one kernel
(each program recomputes its rows' amax from the bf16 input: it saves a launch and the fp8 round trip,
at the price of re-reading the activation rows, which is worth it only for small M).
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_gemm_args import check_gemm_args
from modelgate.kernels.fp8_gemm_configs import DECODE_MAX_M, Fp8GemmConfig, select_config
from modelgate.kernels.fp8_gemm_cublas import fp8_linear_scaled_mm, takes_scaled_mm
from modelgate.kernels.fp8_gemm_tma import launch_fp8_gemm_tma, tma_fits
from modelgate.kernels.fp8_gemm_tma_persistent import launch_fp8_gemm_tma_persistent, takes_persistent
from modelgate.kernels.fp8_quant import (
    FP8_DTYPE,
    FP8_MAX,
    MIN_SCALE,
    SOURCE_DTYPES,
    is_interpreted,
    quantize_per_token,
    quantize_per_token_reference,
    tl,
    to_e4m3,
    to_output,
    triton,
)
from modelgate.kernels.gemm_tiles import grouped_tile, num_sms_of
from modelgate.kernels.split_k_reduce import plan_split_k, reduce_split_k


@triton.jit
def _fp8_gemm_kernel(
    a_ptr,  # [M, K] activations: float8_e4m3fn, or bf16/fp16/fp32 when FUSE_QUANT; column stride 1
    b_ptr,  # [N, K] float8_e4m3fn weight (nn.Linear layout); column stride 1
    a_scale_ptr,  # [M] float32 per-token scales (not read when FUSE_QUANT: computed here)
    b_scale_ptr,  # [N] float32 per-output-channel scales
    bias_ptr,  # [N] bias, read only when HAS_BIAS
    c_ptr,  # SPLIT_K == 1: [M, N] output; else [SPLIT_K, M, N] float32 partials (times the token scale)
    M,  # rows of a (tokens)
    N,  # rows of b (output channels)
    K,  # reduction length
    stride_am,  # elements between rows of a
    stride_bn,  # elements between rows of b
    stride_cm,  # elements between rows of c
    stride_cs,  # elements between the SPLIT_K slices of c (unused when SPLIT_K == 1)
    K_PER_SPLIT,  # K columns per split, a multiple of BLOCK_K (K itself when SPLIT_K == 1)
    HAS_BIAS: tl.constexpr,  # add bias[n]
    FUSE_QUANT: tl.constexpr,  # a is high precision: quantize it per token here
    FP8_MAX: tl.constexpr,  # 448, for FUSE_QUANT
    MIN_SCALE: tl.constexpr,  # smallest token scale, for FUSE_QUANT
    ROUND_IN_FP32: tl.constexpr,  # interpreter only: round to nearest even in fp32 (see fp8_quant, to_output)
    EVEN_K: tl.constexpr,  # K % BLOCK_K == 0: no K masks
    BLOCK_M: tl.constexpr,  # tile rows (tokens)
    BLOCK_N: tl.constexpr,  # tile columns (output channels)
    BLOCK_K: tl.constexpr,  # K step
    GROUP_M: tl.constexpr,  # M tiles per swizzle group
    SPLIT_K: tl.constexpr,  # programs along K (grid axis 1)
    MAX_IMPRECISE_ACC: tl.constexpr,  # sm_90: K elements the tensor cores sum before an fp32 add; None: all
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Out-of-range rows read an in-range row instead of masking (unmasked, vectorizable loads); the
    # store below drops them. int64: rows * stride passes 2^31 for big prefills and weights.
    rows_a = (offs_m % M).to(tl.int64)
    rows_b = (offs_n % N).to(tl.int64)
    k_start = pid_k * K_PER_SPLIT
    k_len = tl.minimum(K - k_start, K_PER_SPLIT)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows_a[:, None] * stride_am + (k_start + offs_k)[None, :]
    b_ptrs = b_ptr + rows_b[:, None] * stride_bn + (k_start + offs_k)[None, :]

    if FUSE_QUANT:
        # The token scale needs the whole row, whatever part of K this program multiplies.
        amax = tl.zeros([BLOCK_M], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            row = tl.load(
                a_ptr + rows_a[:, None] * stride_am + (k0 + offs_k)[None, :], mask=(k0 + offs_k)[None, :] < K, other=0.0
            )
            amax = tl.maximum(amax, tl.max(tl.abs(row.to(tl.float32)), axis=1))
        a_scale = tl.maximum(tl.div_rn(amax, FP8_MAX), MIN_SCALE)
    else:
        a_scale = tl.load(a_scale_ptr + rows_a)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(k_len, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_mask = offs_k[None, :] < k_len - k * BLOCK_K
            a = tl.load(a_ptrs, mask=k_mask, other=0.0)
            b = tl.load(b_ptrs, mask=k_mask, other=0.0)
        if FUSE_QUANT:
            a = to_e4m3(tl.div_rn(a.to(tl.float32), a_scale[:, None]), FP8_MAX, ROUND_IN_FP32)
        acc = tl.dot(a, tl.trans(b), acc, max_num_imprecise_acc=MAX_IMPRECISE_ACC)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    acc = acc * a_scale[:, None]
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    c_ptrs = c_ptr + pid_k.to(tl.int64) * stride_cs + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    if SPLIT_K == 1:
        acc = acc * tl.load(b_scale_ptr + rows_b)[None, :]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rows_b).to(tl.float32)[None, :]
        tl.store(c_ptrs, to_output(acc, c_ptr.dtype.element_ty, ROUND_IN_FP32), mask=c_mask)
    else:
        tl.store(c_ptrs, acc, mask=c_mask)


def _takes_tma(M: int, x, w_fp8, bias, fuse_quant: bool, precise_accumulation: bool) -> bool:
    """Decode sizes on Hopper go to the TMA kernel (kernels/fp8_gemm_tma.py): bulk tile copies leave the warps
    free of address work, and its narrower tiles in deeper pipelines read the weights faster (H100, M = 64:
    89.8 us per layer of an 8B against 98.2). It has no bias, fused quantization or precise accumulation."""
    return M <= DECODE_MAX_M and bias is None and not fuse_quant and not precise_accumulation and tma_fits(x, w_fp8)


def _launch(
    x, x_scales, w_fp8, w_scales, bias, out_dtype, config, fuse_quant: bool, precise_accumulation: bool
) -> torch.Tensor:
    (M, K), N = x.shape, w_fp8.shape[0]
    if config is None and not fuse_quant and takes_scaled_mm(x, x_scales, w_fp8, bias, out_dtype, precise_accumulation):
        return fp8_linear_scaled_mm(x, x_scales, w_fp8, w_scales)  # a switch, off unless set (fp8_gemm_cublas.py)
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    if config is None and _takes_tma(M, x, w_fp8, bias, fuse_quant, precise_accumulation):
        return launch_fp8_gemm_tma(x, x_scales, w_fp8, w_scales, out)
    if config is None and takes_persistent(M, x, w_fp8, bias, fuse_quant, precise_accumulation):
        return launch_fp8_gemm_tma_persistent(x, x_scales, w_fp8, w_scales, out)  # a switch, off unless set
    config = config or select_config(M, N, K, num_sms_of(x.device))
    config.validate()
    k_per_split, split_k, partials = plan_split_k(M, N, K, config.block_k, config.split_k, out)
    grid = (triton.cdiv(M, config.block_m) * triton.cdiv(N, config.block_n), split_k)
    _fp8_gemm_kernel[grid](
        x,
        w_fp8,
        x if x_scales is None else x_scales,
        w_scales,
        w_scales if bias is None else bias,
        partials,
        M,
        N,
        K,
        x.stride(0),
        w_fp8.stride(0),
        N,
        M * N,
        k_per_split,
        HAS_BIAS=bias is not None,
        FUSE_QUANT=fuse_quant,
        FP8_MAX=FP8_MAX,
        MIN_SCALE=MIN_SCALE,
        ROUND_IN_FP32=is_interpreted(_fp8_gemm_kernel),
        EVEN_K=K % config.block_k == 0,
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        GROUP_M=config.group_m,
        SPLIT_K=split_k,
        MAX_IMPRECISE_ACC=config.block_k if precise_accumulation else None,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    if split_k > 1:
        reduce_split_k(partials, w_scales, bias, out)
    return out


def fp8_linear(
    x_fp8: torch.Tensor,  # [M, K] float8_e4m3fn, unit column stride
    x_scales: torch.Tensor,  # [M] float32 per-token scales
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn, unit column stride
    w_scales: torch.Tensor,  # [N] float32 per-output-channel scales
    bias: torch.Tensor | None = None,  # [N] bf16/fp16/fp32
    out_dtype: torch.dtype = torch.bfloat16,
    config: Fp8GemmConfig | None = None,
    precise_accumulation: bool = False,
) -> torch.Tensor:
    """out [M, N] = (x_fp8 @ w_fp8^T) * x_scales[:, None] * w_scales[None, :] (+ bias), fp32 accumulation.

    All tensors on one CUDA device (CPU under TRITON_INTERPRET=1). `config` overrides the table's choice
    (select_config) and keeps this module's kernel; leave it None in production, where decode sizes on Hopper
    take the TMA kernel (_takes_tma), and larger ones cuBLAS or the persistent TMA kernel where their switches
    are set (kernels/fp8_gemm_cublas.py, kernels/fp8_gemm_tma_persistent.py; both off by default).
    Raises ValueError on wrong shapes, dtypes, strides, devices.
    On Hopper the fp8 tensor cores sum their products with fewer bits than fp32 (Triton's default there:
    fast accumulation, like torch._scaled_mm(use_fast_accum=True)); precise_accumulation=True adds each
    BLOCK_K slice into the fp32 accumulator separately (like use_fast_accum=False), at some speed cost.
    """
    check_gemm_args(x_fp8, x_scales, w_fp8, w_scales, bias, out_dtype, (FP8_DTYPE,), "fp8_linear", _fp8_gemm_kernel)
    return _launch(x_fp8, x_scales, w_fp8, w_scales, bias, out_dtype, config, False, precise_accumulation)


def fp8_linear_from_activations(
    x: torch.Tensor,  # [..., K] bf16/fp16/fp32
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn
    w_scales: torch.Tensor,  # [N] float32
    bias: torch.Tensor | None = None,  # [N]
    out_dtype: torch.dtype | None = None,
    fused: bool = False,
    config: Fp8GemmConfig | None = None,
    precise_accumulation: bool = False,
) -> torch.Tensor:
    """[..., N]: x quantized per token (quantize_per_token), then fp8_linear. out_dtype defaults to x.dtype.

    fused=True quantizes inside the GEMM kernel (one launch, no fp8 copy of x); the results are the same
    up to fp32 summation order. precise_accumulation: see fp8_linear.
    """
    what = "fp8_linear_from_activations"
    if x.dim() < 1:
        raise ValueError(f"{what}: x must have a last dimension K, got a scalar")
    out_dtype = x.dtype if out_dtype is None else out_dtype
    x2d = x.reshape(-1, x.shape[-1])
    if x2d.shape[1] > 1 and x2d.stride(1) != 1:
        x2d = x2d.contiguous()
    if fused:
        check_gemm_args(x2d, None, w_fp8, w_scales, bias, out_dtype, SOURCE_DTYPES, what, _fp8_gemm_kernel)
        out = _launch(x2d, None, w_fp8, w_scales, bias, out_dtype, config, True, precise_accumulation)
    else:
        check_gemm_args(x2d, None, w_fp8, w_scales, bias, out_dtype, SOURCE_DTYPES, what, _fp8_gemm_kernel)
        x_fp8, x_scales = quantize_per_token(x2d)
        out = _launch(x_fp8, x_scales, w_fp8, w_scales, bias, out_dtype, config, False, precise_accumulation)
    return out.reshape(*x.shape[:-1], w_fp8.shape[0])


def fp8_linear_reference(
    x_fp8: torch.Tensor,  # [M, K] float8_e4m3fn
    x_scales: torch.Tensor,  # [M] float32
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn
    w_scales: torch.Tensor,  # [N] float32
    bias: torch.Tensor | None = None,  # [N]
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Torch reference of fp8_linear: fp32 matmul of the fp8 values (exact products), then the same epilogue."""
    acc = x_fp8.float() @ w_fp8.float().t()
    out = acc * x_scales.float()[:, None] * w_scales.float()[None, :]
    if bias is not None:
        out = out + bias.float()[None, :]
    return out.to(out_dtype)


def fp8_linear_from_activations_reference(
    x: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Torch reference of fp8_linear_from_activations (the CPU engine's FP8 linear). x: [..., K] -> [..., N]."""
    x2d = x.reshape(-1, x.shape[-1])
    x_fp8, x_scales = quantize_per_token_reference(x2d)
    out = fp8_linear_reference(x_fp8, x_scales, w_fp8, w_scales, bias, out_dtype or x.dtype)
    return out.reshape(*x.shape[:-1], w_fp8.shape[0])
