"""The gate | up GEMM with SiLU-and-mul in its epilogue, its tiles loaded by TMA: decode sizes on Hopper.

kernels/fp8_gemm_tma.py's K loop (one bulk copy per tile, rows past the tensor arriving as zeros) with two
B descriptors' worth of tiles per step: gate rows n..n+BLOCK_N and up rows I+n..I+n+BLOCK_N, so a program's
shared memory and registers are those of the unfused kernel's 2 * BLOCK_N tile. The epilogue is
kernels/fp8_gemm_silu.py's (silu_mul_tile.silu_epilogue); kernels/fp8_gemm_silu.py launches this kernel at
decode sizes where TMA fits and quantizes its output.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_gemm_configs import Fp8GemmConfig
from modelgate.kernels.fp8_gemm_tma import TensorDescriptor
from modelgate.kernels.fp8_quant import is_interpreted, tl, triton
from modelgate.kernels.gemm_tiles import grouped_tile
from modelgate.kernels.silu_mul_tile import silu_epilogue


@triton.jit
def _fp8_gemm_silu_tma_kernel(
    a_desc,  # [M, K] float8_e4m3fn activations, block [BLOCK_M, BLOCK_K]
    b_desc,  # [2 * INTER, K] float8_e4m3fn gate | up weight, block [BLOCK_N, BLOCK_K]
    a_scale_ptr,  # [M] float32
    b_scale_ptr,  # [2 * INTER] float32
    y_ptr,  # [M, INTER] y's dtype, contiguous
    amax_ptr,  # [M, num_pieces] float32
    M,
    INTER,
    K,
    num_pieces,  # cdiv(INTER, BLOCK_N)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, INTER, BLOCK_M, BLOCK_N, GROUP_M)
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # The last gate tile may run past INTER into up rows: those columns are never stored.
    for k in range(0, K, BLOCK_K):  # columns past K arrive as zeros
        a = a_desc.load([pid_m * BLOCK_M, k])
        gate = b_desc.load([pid_n * BLOCK_N, k])
        up = b_desc.load([INTER + pid_n * BLOCK_N, k])
        acc_gate = tl.dot(a, tl.trans(gate), acc_gate)
        acc_up = tl.dot(a, tl.trans(up), acc_up)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_gate = (offs_n % INTER).to(tl.int64)  # in-range scale reads; the columns past INTER are not stored
    silu_epilogue(
        acc_gate, acc_up, offs_m, offs_n, rows_gate, rows_gate + INTER, pid_n, M, INTER, num_pieces,
        a_scale_ptr + offs_m % M, b_scale_ptr, y_ptr, amax_ptr, ROUND_IN_FP32,
    )  # fmt: skip


def launch_fp8_gemm_silu_tma(
    x_fp8: torch.Tensor,  # [M, K] contiguous, 16-byte aligned, K % 16 == 0 (fp8_gemm_tma.tma_fits)
    x_scales: torch.Tensor,
    w_fp8: torch.Tensor,  # [2 * I, K] contiguous, 16-byte aligned
    w_scales: torch.Tensor,
    y: torch.Tensor,  # [M, I]: written
    amax: torch.Tensor,  # [M, cdiv(I, config.block_n)]: written
    config: Fp8GemmConfig,  # BLOCK_N = columns of y per program; unsplit
) -> None:
    """The kernel for callers that checked the arguments (kernels/fp8_gemm_silu.py)."""
    (M, K), inter = x_fp8.shape, y.shape[1]
    a_desc = TensorDescriptor.from_tensor(x_fp8, [config.block_m, config.block_k])
    b_desc = TensorDescriptor.from_tensor(w_fp8, [config.block_n, config.block_k])
    _fp8_gemm_silu_tma_kernel[(triton.cdiv(M, config.block_m) * amax.shape[1],)](
        a_desc,
        b_desc,
        x_scales,
        w_scales,
        y,
        amax,
        M,
        inter,
        K,
        amax.shape[1],
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        GROUP_M=config.group_m,
        ROUND_IN_FP32=is_interpreted(_fp8_gemm_silu_tma_kernel),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
