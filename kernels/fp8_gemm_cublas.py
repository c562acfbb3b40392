"""cuBLAS (torch._scaled_mm) as the FP8 GEMM at prefill sizes: a switch, off by default, for A/B runs.

At M = 1024 the H100 sweep (benchmarks/fp8_gemm.py, session 25) timed torch._scaled_mm with fast accumulation
at 1347 / 1374 / 1442 / 1381 TFLOP/s on Llama-3-8B's qkv / o / gate_up / down projections against 1039 / 1103 /
1233 / 1318 for kernels/fp8_gemm.py's tiles; at M = 2048 the two were within 5% of each other but for down,
where ours was faster. Whether handing plain prefill GEMMs to cuBLAS shortens the first token's time is what
the switch lets an engine benchmark measure in one process:

    python benchmarks/llm_ttft_breakdown.py --isls 512 1024 2048 \\
        --variant base cublas:modelgate.kernels.fp8_gemm_cublas.SCALED_MM_MIN_M=257

The product is fp8_linear's: (x @ w^T) * per-token scales * per-channel scales, rounded to bf16, the tensor
cores' fast accumulation (fp8_linear's default on Hopper). The fused gate/up with SiLU-and-mul
(kernels/fp8_gemm_silu.py) stays on its own kernel.
"""

from __future__ import annotations

import functools

import torch

# fp8_linear hands GEMMs of at least this many rows to cuBLAS (where it takes these operands); 0: never.
SCALED_MM_MIN_M = 0


@functools.cache
def rowwise_scaled_mm_refusal(device: torch.device) -> str | None:
    """None where this CUDA device's torch._scaled_mm takes per-row and per-column fp32 scales (sm_89 and
    newer), else the first line of its refusal."""
    a = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
    b = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(
            a,
            b.t(),
            scale_a=torch.ones(16, 1, device=device),
            scale_b=torch.ones(1, 16, device=device),
            out_dtype=torch.bfloat16,
        )
    except (RuntimeError, TypeError) as error:
        return str(error).splitlines()[0]
    return None


def scaled_mm_operands_fit(
    M: int, N: int, K: int, bias: bool, out_dtype: torch.dtype, precise_accumulation: bool, contiguous: bool
) -> bool:
    """The switch is on, the GEMM has SCALED_MM_MIN_M rows or more, and cuBLAS takes it as fp8_linear has it:
    no bias, bf16 out, fast accumulation, K and N multiples of 16, contiguous operands."""
    if SCALED_MM_MIN_M <= 0 or M < SCALED_MM_MIN_M or bias or precise_accumulation:
        return False
    return out_dtype == torch.bfloat16 and K % 16 == 0 and N % 16 == 0 and contiguous


def takes_scaled_mm(
    x_fp8: torch.Tensor,
    x_scales: torch.Tensor | None,
    w_fp8: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    precise_accumulation: bool,
) -> bool:
    """True when fp8_linear hands this GEMM of quantized rows (x_scales given: no quantization inside the GEMM)
    to cuBLAS: scaled_mm_operands_fit, on a CUDA device whose _scaled_mm takes rowwise scales."""
    if SCALED_MM_MIN_M <= 0 or x_scales is None or not x_fp8.is_cuda:  # the switch first: fp8_linear's hot path
        return False
    contiguous = x_fp8.is_contiguous() and w_fp8.is_contiguous() and x_scales.is_contiguous()
    (M, K), N = x_fp8.shape, w_fp8.shape[0]
    if not scaled_mm_operands_fit(M, N, K, bias is not None, out_dtype, precise_accumulation, contiguous):
        return False
    return rowwise_scaled_mm_refusal(x_fp8.device) is None


def fp8_linear_scaled_mm(
    x_fp8: torch.Tensor,  # [M, K] float8_e4m3fn
    x_scales: torch.Tensor,  # [M] float32
    w_fp8: torch.Tensor,  # [N, K] float8_e4m3fn
    w_scales: torch.Tensor,  # [N] float32
) -> torch.Tensor:  # [M, N] bf16
    """fp8_linear's product through cuBLAS, for operands takes_scaled_mm accepted."""
    return torch._scaled_mm(
        x_fp8,
        w_fp8.t(),
        scale_a=x_scales[:, None],
        scale_b=w_scales.reshape(1, -1),
        out_dtype=torch.bfloat16,
        use_fast_accum=True,
    )
