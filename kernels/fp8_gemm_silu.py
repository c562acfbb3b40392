"""FP8 gate | up GEMM with SiLU-and-mul in its epilogue, quantized per token: SwiGLU's first half in two launches.

Unfused, a step of M tokens runs the gate | up GEMM (kernels/fp8_gemm.py), which writes [M, 2I] in bf16, then
kernels/silu_and_mul_split.py, which reads it back, writes y = silu(gate) * up with each piece's amax, and
quantizes y per token. Here a program owns the same columns n..n+BLOCK_N/2 of gate and of up (two accumulators,
the register and shared-memory footprint of one BLOCK_N tile), so its epilogue computes y itself and writes y
and the tile's row amaxes; `quantize_pieces` of kernels/silu_and_mul_split.py then quantizes y from
those amaxes. The [M, 2I] output never exists, and the SiLU-and-mul kernel is gone.

At decode sizes on Hopper, where fp8_linear takes its TMA kernel, the fused GEMM is the TMA one too
(kernels/fp8_gemm_silu_tma.py); `plan_silu_fusion` picks kernel and config as fp8_linear would unfused.

Bits: every rounding of the unfused path is kept (the GEMM's output rounded to y's dtype, silu and the product
rounded like torch by `silu_mul_values`, the same amax and scale), and the K loop is the unfused kernel's for
the same BLOCK_M and BLOCK_K, so the result equals silu_and_mul_fp8_split(fp8_linear(...)) run with the same
config. Where the GEMM's config splits K (small M, long K) there is no fused kernel: the plan is None.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from modelgate.kernels.fp8_gemm_args import check_gemm_args
from modelgate.kernels.fp8_gemm_configs import DECODE_MAX_M, Fp8GemmConfig, select_config, select_tma_config
from modelgate.kernels.fp8_gemm_silu_tma import launch_fp8_gemm_silu_tma
from modelgate.kernels.fp8_gemm_tma import tma_fits
from modelgate.kernels.fp8_quant import FP8_DTYPE, Fp8Rows, is_interpreted, tl, triton
from modelgate.kernels.gemm_tiles import grouped_tile, num_sms_of, tile_launch_options
from modelgate.kernels.silu_and_mul_split import quantize_pieces
from modelgate.kernels.silu_mul_tile import silu_epilogue


@triton.jit
def _fp8_gemm_silu_kernel(
    a_ptr,  # [M, K] float8_e4m3fn activations, column stride 1
    b_ptr,  # [2 * INTER, K] float8_e4m3fn weight, gate rows then up rows; column stride 1
    a_scale_ptr,  # [M] float32 per-token scales
    b_scale_ptr,  # [2 * INTER] float32 per-output-channel scales
    y_ptr,  # [M, INTER] silu(gate) * up in y's dtype, contiguous
    amax_ptr,  # [M, num_pieces] float32: max |y| of the row's columns in each program's tile
    M,
    INTER,
    K,
    stride_am,
    stride_bn,
    num_pieces,  # cdiv(INTER, BLOCK_N)
    ROUND_IN_FP32: tl.constexpr,  # interpreter only (see fp8_quant.to_output)
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # columns of y per program: BLOCK_N of gate and BLOCK_N of up
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, INTER, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # As in kernels/fp8_gemm.py: rows past M or INTER read an in-range row (unmasked loads); stores are masked.
    rows_a = (offs_m % M).to(tl.int64)
    rows_gate = (offs_n % INTER).to(tl.int64)
    rows_up = rows_gate + INTER
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows_a[:, None] * stride_am + offs_k[None, :]
    gate_ptrs = b_ptr + rows_gate[:, None] * stride_bn + offs_k[None, :]
    up_ptrs = b_ptr + rows_up[:, None] * stride_bn + offs_k[None, :]

    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            gate = tl.load(gate_ptrs)
            up = tl.load(up_ptrs)
        else:
            k_mask = offs_k[None, :] < K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=k_mask, other=0.0)
            gate = tl.load(gate_ptrs, mask=k_mask, other=0.0)
            up = tl.load(up_ptrs, mask=k_mask, other=0.0)
        acc_gate = tl.dot(a, tl.trans(gate), acc_gate)
        acc_up = tl.dot(a, tl.trans(up), acc_up)
        a_ptrs += BLOCK_K
        gate_ptrs += BLOCK_K
        up_ptrs += BLOCK_K

    silu_epilogue(
        acc_gate, acc_up, offs_m, offs_n, rows_gate, rows_up, pid_n, M, INTER, num_pieces,
        a_scale_ptr + rows_a, b_scale_ptr, y_ptr, amax_ptr, ROUND_IN_FP32,
    )  # fmt: skip


class SiluFusionPlan(NamedTuple):
    """How fp8_linear_silu runs: its config (BLOCK_N = columns of y per program) and which kernel."""

    config: Fp8GemmConfig
    tma: bool  # kernels/fp8_gemm_silu_tma.py, else this module's cp.async kernel


def silu_fusion_config(M: int, inter: int, K: int, sms: int, tma: bool = False) -> Fp8GemmConfig | None:
    """The fused launch for M tokens: the unfused GEMM's config for [2 * inter, K] (select_tma_config's for the
    TMA kernel) with each half of its BLOCK_N given to gate and up; None where that config splits K or its tile
    is too narrow to halve."""
    config = (select_tma_config if tma else select_config)(M, 2 * inter, K, sms)
    if config.split_k != 1 or config.block_n < 32:
        return None
    return dataclasses.replace(config, block_n=config.block_n // 2)


def plan_silu_fusion(x_fp8: torch.Tensor, w_fp8: torch.Tensor) -> SiluFusionPlan | None:
    """The plan fp8_linear_silu takes for these operands by default, or None where it has none. The kernel is
    the one fp8_linear would run unfused: TMA at decode sizes where it fits (Hopper), else cp.async; at decode
    sizes without TMA there is none (fp8_linear's split-K tiles there have no fused kernel)."""
    (M, K), inter = x_fp8.shape, w_fp8.shape[0] // 2
    tma = M <= DECODE_MAX_M and tma_fits(x_fp8, w_fp8)
    if M <= DECODE_MAX_M and not tma:
        return None
    config = silu_fusion_config(M, inter, K, num_sms_of(x_fp8.device), tma)
    return None if config is None else SiluFusionPlan(config, tma)


def fp8_linear_silu(
    x_fp8: torch.Tensor,  # [M, K] float8_e4m3fn, unit column stride
    x_scales: torch.Tensor,  # [M] float32 per-token scales
    w_fp8: torch.Tensor,  # [2 * I, K] float8_e4m3fn: gate rows, then up rows; unit column stride
    w_scales: torch.Tensor,  # [2 * I] float32
    y_dtype: torch.dtype = torch.bfloat16,  # the dtype the unfused GEMM would write (the model's)
    plan: SiluFusionPlan | None = None,  # default plan_silu_fusion's
) -> Fp8Rows:  # [M, I] float8_e4m3fn and [M] float32 scales
    """silu(gate) * up of the gate | up projection of x, quantized per token: the bits of
    silu_and_mul_fp8_split(fp8_linear(x_fp8, x_scales, w_fp8, w_scales, out_dtype=y_dtype)) where the GEMM runs
    the same kernel with twice the plan's BLOCK_N (as it does by default). ValueError on wrong arguments, or when
    no plan applies (check plan_silu_fusion first). Nothing synchronizes with the device (CUDA-graph safe)."""
    what = "fp8_linear_silu"
    check_gemm_args(x_fp8, x_scales, w_fp8, w_scales, None, y_dtype, (FP8_DTYPE,), what, _fp8_gemm_silu_kernel)
    (M, K), N = x_fp8.shape, w_fp8.shape[0]
    if N % 2:
        raise ValueError(f"{what}: w_fp8 must have an even number of rows (gate | up), got {N}")
    inter = N // 2
    plan = plan or plan_silu_fusion(x_fp8, w_fp8)
    if plan is None:
        raise ValueError(f"{what}: no fused kernel at M={M}, I={inter}, K={K} on {x_fp8.device}")
    config = plan.config
    config.validate()
    if config.split_k != 1:
        raise ValueError(f"{what}: config.split_k must be 1, got {config.split_k}")
    if plan.tma and not tma_fits(x_fp8, w_fp8):
        raise ValueError(f"{what}: the TMA kernel needs contiguous, 16-byte aligned operands with K % 16 == 0")
    values = torch.empty((M, inter), dtype=FP8_DTYPE, device=x_fp8.device)
    scales = torch.empty((M,), dtype=torch.float32, device=x_fp8.device)
    if M == 0:
        return Fp8Rows(values, scales)
    num_pieces = triton.cdiv(inter, config.block_n)
    y = torch.empty((M, inter), dtype=y_dtype, device=x_fp8.device)
    amax = torch.empty((M, num_pieces), dtype=torch.float32, device=x_fp8.device)
    interpreted = is_interpreted(_fp8_gemm_silu_kernel)
    if plan.tma:
        launch_fp8_gemm_silu_tma(x_fp8, x_scales, w_fp8, w_scales, y, amax, config)
    else:
        _fp8_gemm_silu_kernel[(triton.cdiv(M, config.block_m) * num_pieces,)](
            x_fp8,
            w_fp8,
            x_scales,
            w_scales,
            y,
            amax,
            M,
            inter,
            K,
            x_fp8.stride(0),
            w_fp8.stride(0),
            num_pieces,
            ROUND_IN_FP32=interpreted,
            EVEN_K=K % config.block_k == 0,
            **tile_launch_options(config),
        )
    return quantize_pieces(y, amax, values, scales)
