"""The second kernel of a split-K FP8 GEMM: sum the K slices' partials in order, then the weight's scales.

kernels/fp8_gemm.py and kernels/fp8_gemm_tma.py split K over programs when a decode-sized M leaves the SMs
short of tiles; each split stores its fp32 partial sums (already times the token scale) and this kernel
adds them slice by slice (deterministic), scales by the per-channel weight scales, adds the bias and rounds.
"""

from __future__ import annotations

import torch

from modelgate.kernels.fp8_quant import is_interpreted, tl, to_output, triton


def plan_split_k(M: int, N: int, K: int, block_k: int, split_k: int, out: torch.Tensor):
    """(k_per_split, split_k, partials): K columns per split (whole BLOCK_K steps), the number of non-empty
    splits, and where the GEMM kernel writes: fp32 partials [split_k, M, N], or `out` itself without a split."""
    k_per_split = triton.cdiv(triton.cdiv(K, block_k), split_k) * block_k
    split_k = triton.cdiv(K, k_per_split)  # every split non-empty
    partials = torch.empty((split_k, M, N), dtype=torch.float32, device=out.device) if split_k > 1 else out
    return k_per_split, split_k, partials


@triton.jit
def _split_k_reduce_kernel(
    p_ptr,  # [SPLIT_K, M, N] float32 partial sums, contiguous
    b_scale_ptr,  # [N] float32 per-output-channel scales
    bias_ptr,  # [N] bias, read only when HAS_BIAS
    c_ptr,  # [M, N] output, contiguous
    M,  # rows
    N,  # columns
    HAS_BIAS: tl.constexpr,  # add bias[n]
    SPLIT_K: tl.constexpr,  # number of partial slices, summed in order (deterministic)
    BLOCK: tl.constexpr,  # elements per program
    ROUND_IN_FP32: tl.constexpr,  # interpreter only (see to_output)
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M * N
    cols = offs % N
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(p_ptr + s * M * N + offs, mask=mask, other=0.0)
    acc = acc * tl.load(b_scale_ptr + cols, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(c_ptr + offs, to_output(acc, c_ptr.dtype.element_ty, ROUND_IN_FP32), mask=mask)


def reduce_split_k(partials: torch.Tensor, w_scales: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor):
    """out = sum over splits of partials [SPLIT_K, M, N] (fp32, token scale applied) * w_scales (+ bias)."""
    split_k, M, N = partials.shape
    block = 1024
    _split_k_reduce_kernel[(triton.cdiv(M * N, block),)](
        partials,
        w_scales,
        w_scales if bias is None else bias,
        out,
        M,
        N,
        HAS_BIAS=bias is not None,
        SPLIT_K=split_k,
        BLOCK=block,
        num_warps=4,
        ROUND_IN_FP32=is_interpreted(_split_k_reduce_kernel),
    )
