"""The FP8 W8A8 GEMM with its tiles loaded by the Hopper tensor memory accelerator (TMA): decode sizes on Hopper.

kernels/fp8_gemm.py loads its A and B tiles with cp.async, one 16-byte copy per thread per row piece, each with
its own address arithmetic; at decode sizes (M = 64) it reads the weights at about 0.75 of the read bandwidth
(an H100 decode-step profile). Here each tile is one bulk copy described by a tensor descriptor (the rows
past M or N arrive as zeros), which frees the warps from address work and lets narrow tiles run deep
pipelines (select_tma_config). Same product and epilogue as `fp8_linear` (per-token and per-channel scales,
fp32 accumulation, split-K where the config asks, output rounded to out_dtype), without bias or fused
quantization. `fp8_linear` sends decode sizes here on Hopper; benchmarks/fp8_gemm_tma.py measures both kernels.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_gemm_args import check_gemm_args
from modelgate.kernels.fp8_gemm_configs import Fp8GemmConfig, select_tma_config
from modelgate.kernels.fp8_quant import FP8_DTYPE, is_interpreted, tl, to_output, triton
from modelgate.kernels.gemm_tiles import grouped_tile, num_sms_of, tile_launch_options
from modelgate.kernels.grid_dependency import pdl_supported, prefetch_rows_to_l2, wait_for_previous_kernel
from modelgate.kernels.split_k_reduce import plan_split_k, reduce_split_k

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # triton without host-side descriptors: fp8_linear keeps its own kernel
    TensorDescriptor = None

# Hopper, compiled: > 0 launches the kernel with programmatic dependent launch (kernels/grid_dependency.py), and
# each program asks L2 for the first PDL_PREFETCH_BYTES of each of its weight rows before waiting for the kernel
# before it. At decode sizes the weights are nearly all a GEMM reads, and the kernel before it (the RMSNorm that
# lets its dependents launch early) leaves memory idle for a few microseconds. H100, Llama-3-8B-shaped FP8
# decode step at context 192 (session 27, benchmarks/llm_decode_step.py --variant): batch 64 4.46 -> 4.43 ms,
# batch 256 7.98 -> 7.96. 0 turns it off.
PDL_PREFETCH_BYTES = 1024


@triton.jit
def tma_tile_product(
    a_desc, b_desc, off_m, off_n, k_start, k_end, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr
):
    """fp32 [BLOCK_M, BLOCK_N]: rows off_m.. of A times rows off_n.. of B over columns k_start..k_end, both tiles
    loaded through their descriptors (columns past K arrive as zeros)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        a = a_desc.load([off_m, k])
        b = b_desc.load([off_n, k])
        acc = tl.dot(a, tl.trans(b), acc)
    return acc


@triton.jit
def _fp8_gemm_tma_kernel(
    a_desc,  # [M, K] float8_e4m3fn activations, block [BLOCK_M, BLOCK_K]
    b_desc,  # [N, K] float8_e4m3fn weight, block [BLOCK_N, BLOCK_K]
    b_ptr,  # the weight's storage (b_desc's), for the L2 prefetch
    a_scale_ptr,  # [M] float32 per-token scales
    b_scale_ptr,  # [N] float32 per-output-channel scales
    c_ptr,  # SPLIT_K == 1: [M, N] output; else [SPLIT_K, M, N] float32 partials (times the token scale)
    M,
    N,
    K,
    stride_cm,
    K_PER_SPLIT,  # K columns per split, a multiple of BLOCK_K (K itself when SPLIT_K == 1)
    SPLIT_K: tl.constexpr,  # programs along K (grid axis 1), summed by kernels/fp8_gemm.py's reduce kernel
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
    PREFETCH_BYTES: tl.constexpr = 0,  # > 0: launched with PDL; see PDL_PREFETCH_BYTES
    PREFETCH_CHUNKS: tl.constexpr = 1,  # bulk prefetches per weight row (BLOCK_N * this: the program's threads)
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    k_start = pid_k * K_PER_SPLIT
    k_end = tl.minimum(K, k_start + K_PER_SPLIT)
    if PREFETCH_BYTES > 0:
        # The weights depend on no kernel: asked of L2 while the kernel before (an RMSNorm) still runs. Nothing
        # else is read, and nothing written, before the wait.
        prefetch_bytes = tl.minimum(PREFETCH_BYTES, k_end - k_start)
        prefetch_rows_to_l2(b_ptr, pid_n * BLOCK_N, N, K, k_start, prefetch_bytes, BLOCK_N, PREFETCH_CHUNKS)
    wait_for_previous_kernel(PREFETCH_BYTES > 0)
    acc = tma_tile_product(a_desc, b_desc, pid_m * BLOCK_M, pid_n * BLOCK_N, k_start, k_end, BLOCK_M, BLOCK_N, BLOCK_K)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = acc * tl.load(a_scale_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        acc = acc * tl.load(b_scale_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
        c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, to_output(acc, c_ptr.dtype.element_ty, ROUND_IN_FP32), mask=c_mask)
    else:
        partial_ptrs = c_ptr + (pid_k * M + offs_m).to(tl.int64)[:, None] * N + offs_n[None, :]
        tl.store(partial_ptrs, acc, mask=c_mask)


def can_run_tma(device: torch.device) -> bool:
    """True where the TMA GEMM can run: a Hopper-or-newer CUDA GPU, or the CPU under the interpreter."""
    if TensorDescriptor is None:
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (9, 0)
    return device.type == "cpu" and is_interpreted(_fp8_gemm_tma_kernel)


def tma_fits(x_fp8: torch.Tensor, w_fp8: torch.Tensor) -> bool:
    """Whether TMA can describe these operands (contiguous, K a multiple of 16: 16-byte row strides) on their
    device. Shapes and dtypes are the caller's checks."""
    return (
        x_fp8.shape[1] % 16 == 0
        and x_fp8.is_contiguous()
        and w_fp8.is_contiguous()
        and x_fp8.data_ptr() % 16 == 0
        and w_fp8.data_ptr() % 16 == 0
        and can_run_tma(x_fp8.device)
    )


def fp8_linear_tma(
    x_fp8: torch.Tensor,  # [M, K] float8_e4m3fn, contiguous
    x_scales: torch.Tensor,  # [M] float32
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn, contiguous
    w_scales: torch.Tensor,  # [N] float32
    out_dtype: torch.dtype = torch.bfloat16,
    config: Fp8GemmConfig | None = None,  # default: select_tma_config's
) -> torch.Tensor:  # [M, N] out_dtype
    """(x_fp8 @ w_fp8^T) * x_scales[:, None] * w_scales[None, :], as kernels.fp8_gemm.fp8_linear computes it.

    K must be a multiple of 16 (TMA's 16-byte row stride). Raises ValueError on wrong shapes, dtypes, strides
    or devices, and RuntimeError where TMA cannot run (see can_run_tma).
    """
    what = "fp8_linear_tma"
    check_gemm_args(x_fp8, x_scales, w_fp8, w_scales, None, out_dtype, (FP8_DTYPE,), what, _fp8_gemm_tma_kernel)
    if not can_run_tma(x_fp8.device):
        raise RuntimeError(f"{what}: needs a Hopper-or-newer GPU and triton's TensorDescriptor")
    if not tma_fits(x_fp8, w_fp8):
        raise ValueError(
            f"{what}: x_fp8 and w_fp8 must be contiguous and 16-byte aligned with K a multiple of 16, "
            f"got K={x_fp8.shape[1]}"
        )
    out = torch.empty((x_fp8.shape[0], w_fp8.shape[0]), dtype=out_dtype, device=x_fp8.device)
    return launch_fp8_gemm_tma(x_fp8, x_scales, w_fp8, w_scales, out, config)


def launch_fp8_gemm_tma(
    x_fp8: torch.Tensor,
    x_scales: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scales: torch.Tensor,
    out: torch.Tensor,  # [M, N]: written
    config: Fp8GemmConfig | None = None,
) -> torch.Tensor:
    """fp8_linear_tma into `out`, for callers that checked the arguments and `tma_fits`; returns `out`."""
    (M, K), N = x_fp8.shape, w_fp8.shape[0]
    if M == 0 or N == 0:
        return out
    config = config or select_tma_config(M, N, K, num_sms_of(x_fp8.device))
    config.validate()
    k_per_split, split_k, partials = plan_split_k(M, N, K, config.block_k, config.split_k, out)
    a_desc = TensorDescriptor.from_tensor(x_fp8, [config.block_m, config.block_k])
    b_desc = TensorDescriptor.from_tensor(w_fp8, [config.block_n, config.block_k])
    grid = (triton.cdiv(M, config.block_m) * triton.cdiv(N, config.block_n), split_k)
    prefetch = PDL_PREFETCH_BYTES if PDL_PREFETCH_BYTES > 0 and pdl_supported(_fp8_gemm_tma_kernel, x_fp8.device) else 0
    _fp8_gemm_tma_kernel[grid](
        a_desc,
        b_desc,
        w_fp8,
        x_scales,
        w_scales,
        partials,
        M,
        N,
        K,
        out.stride(0),
        k_per_split,
        SPLIT_K=split_k,
        ROUND_IN_FP32=is_interpreted(_fp8_gemm_tma_kernel),
        **tile_launch_options(config),
        PREFETCH_BYTES=prefetch,
        PREFETCH_CHUNKS=max(1, config.num_warps * 32 // config.block_n),
        launch_pdl=prefetch > 0,
    )
    if split_k > 1:
        reduce_split_k(partials, w_scales, None, out)
    return out
