"""The TMA-loaded FP8 GEMM as a persistent kernel, for prefill sizes: one program per SM walks the output tiles.

kernels/fp8_gemm_tma.py launches a program per output tile. At prefill sizes (hundreds to thousands of rows)
that is several waves of programs, each starting with an empty pipeline and ending with a store its SM waits
on. Here `num_programs` (at most the SM count) programs each take every num_programs-th tile in grouped order
(gemm_tiles.grouped_tile), so an SM starts the next tile's loads right behind the last one's; with `flatten`
Triton's pipeliner may also overlap a tile's epilogue with the next tile's first loads. Same product and
epilogue as fp8_linear_tma (per-token and per-channel scales, fp32 accumulation, output rounded to out_dtype),
unsplit, no bias.

Whether it beats the per-tile kernels on the H100 is not measured yet: fp8_linear takes it only where
PERSISTENT_MIN_M is set (0, the default: never), so that benchmarks/fp8_gemm_tma.py and the engine
benchmarks' --variant can time it against them.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_gemm_configs import Fp8GemmConfig, select_config
from modelgate.kernels.fp8_gemm_tma import TensorDescriptor, can_run_tma, tma_fits, tma_tile_product
from modelgate.kernels.fp8_quant import is_interpreted, tl, to_output, triton
from modelgate.kernels.gemm_tiles import grouped_tile, num_sms_of, tile_launch_options

# fp8_linear sends GEMMs of at least this many rows (that the TMA kernels can take) here; 0: never.
PERSISTENT_MIN_M = 0
# tl.range(flatten=...) over the tile loop: lets the pipeliner run across tile boundaries.
FLATTEN_TILE_LOOP = True


@triton.jit
def _fp8_gemm_tma_persistent_kernel(
    a_desc,  # [M, K] float8_e4m3fn activations, block [BLOCK_M, BLOCK_K]
    b_desc,  # [N, K] float8_e4m3fn weight, block [BLOCK_N, BLOCK_K]
    a_scale_ptr,  # [M] float32 per-token scales
    b_scale_ptr,  # [N] float32 per-output-channel scales
    c_ptr,  # [M, N] output
    M,
    N,
    K,
    stride_cm,
    NUM_PROGRAMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
    FLATTEN: tl.constexpr,
):
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), num_tiles, NUM_PROGRAMS, flatten=FLATTEN):
        pid_m, pid_n = grouped_tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tma_tile_product(a_desc, b_desc, pid_m * BLOCK_M, pid_n * BLOCK_N, 0, K, BLOCK_M, BLOCK_N, BLOCK_K)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = acc * tl.load(a_scale_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
        acc = acc * tl.load(b_scale_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
        c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
        c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tl.store(c_ptrs, to_output(acc, c_ptr.dtype.element_ty, ROUND_IN_FP32), mask=c_mask)


def takes_persistent(M: int, x_fp8: torch.Tensor, w_fp8: torch.Tensor, bias, fuse_quant: bool, precise: bool) -> bool:
    """Whether fp8_linear sends this GEMM here: the switch is on, M >= PERSISTENT_MIN_M, and the TMA kernels can
    take it as it is (no bias, fused quantization or precise accumulation; tma_fits)."""
    if PERSISTENT_MIN_M <= 0 or M < PERSISTENT_MIN_M or bias is not None or fuse_quant or precise:
        return False
    return tma_fits(x_fp8, w_fp8)


def launch_fp8_gemm_tma_persistent(
    x_fp8: torch.Tensor,  # [M, K] float8_e4m3fn, contiguous, K a multiple of 16
    x_scales: torch.Tensor,  # [M] float32
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn, contiguous
    w_scales: torch.Tensor,  # [N] float32
    out: torch.Tensor,  # [M, N]: written
    config: Fp8GemmConfig | None = None,  # default: select_config's tiles, unsplit
    num_programs: int | None = None,  # default: the SM count, or the tiles where fewer
) -> torch.Tensor:
    """fp8_linear's product into `out` by the persistent kernel, for callers that checked the arguments and
    tma_fits; returns `out`. RuntimeError where TMA cannot run (can_run_tma)."""
    if not can_run_tma(x_fp8.device):
        raise RuntimeError("launch_fp8_gemm_tma_persistent: needs a Hopper-or-newer GPU and TensorDescriptor")
    (M, K), N = x_fp8.shape, w_fp8.shape[0]
    if M == 0 or N == 0:
        return out
    config = config or select_config(M, N, K, num_sms_of(x_fp8.device))
    config.validate()
    tiles = triton.cdiv(M, config.block_m) * triton.cdiv(N, config.block_n)
    programs = min(tiles, num_programs or num_sms_of(x_fp8.device))
    _fp8_gemm_tma_persistent_kernel[(programs,)](
        TensorDescriptor.from_tensor(x_fp8, [config.block_m, config.block_k]),
        TensorDescriptor.from_tensor(w_fp8, [config.block_n, config.block_k]),
        x_scales,
        w_scales,
        out,
        M,
        N,
        K,
        out.stride(0),
        NUM_PROGRAMS=programs,
        ROUND_IN_FP32=is_interpreted(_fp8_gemm_tma_persistent_kernel),
        **tile_launch_options(config),
        FLATTEN=FLATTEN_TILE_LOOP,
    )
    return out
