"""How GEMM programs map onto output tiles and SMs, shared by the FP8 GEMM kernels (fp8_gemm.py, fp8_gemm_tma.py)."""

from __future__ import annotations

import functools

import torch

from modelgate.kernels.fp8_gemm_configs import DEFAULT_NUM_SMS
from modelgate.kernels.fp8_quant import tl, triton


@functools.cache
def _cuda_num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_sms_of(device: torch.device) -> int:
    """SM count of a CUDA device; DEFAULT_NUM_SMS for the CPU (interpreter)."""
    if device.type != "cuda":
        return DEFAULT_NUM_SMS
    return _cuda_num_sms(device.index if device.index is not None else torch.cuda.current_device())


def tile_launch_options(config) -> dict[str, int]:
    """An Fp8GemmConfig's tile as the GEMM kernels' constexprs (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M) and launch
    options (num_warps, num_stages), for `kernel[grid](..., **tile_launch_options(config))`."""
    return dict(
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        GROUP_M=config.group_m,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(tile row, tile column) of program `pid` in grouped order: consecutive programs walk GROUP_M tiles down
    M before moving along N, so the weight tiles they load are shared through L2."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    return first_pid_m + ((pid % num_pid_in_group) % group_size_m), (pid % num_pid_in_group) // group_size_m
