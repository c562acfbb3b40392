"""cuBLAS (torch._scaled_mm) as the FP8 GEMM at prefill sizes: GEMMs of SCALED_MM_MIN_M rows or more.

At M = 512 / 1024 the H100 sweeps (benchmarks/fp8_gemm.py, session 25) timed torch._scaled_mm with fast
accumulation at 1077 / 1347, 1139 / 1374, 1325 / 1442 and 1392 / 1381 TFLOP/s on Llama-3-8B's qkv, o, gate_up and
down projections against 1010 / 1039, 1082 / 1103, 1079 / 1233 and 1254 / 1318 for kernels/fp8_gemm.py's tiles; at
2,048 and 4,096 rows cuBLAS stayed 4-9% ahead on the first three and ours 15-16% ahead on down (1466 / 1485
against 1268 / 1289), so GEMMs shaped like down (K at least 3 N) stay on ours from LONG_K_OURS_MIN_M rows.
In the engine (benchmarks/llm_ttft_breakdown.py, H100, session 30, one engine per variant in one process,
3 requests each):

    ISL     ours (2 runs)   plain GEMMs on cuBLAS   all four (the gate | up unfused, Fp8Linear._silu_plan)
    1,024   18.6, 19.2 ms   17.8 ms                 17.6 ms   (kernels of the prefill step: 22.3-22.5 -> 20.6 ms)
    2,048   36.0, 36.2 ms   35.8 ms                 34.8 ms   (38.6-39.1 -> 38.0 ms)

so all four go to cuBLAS from 257 rows (the Triton tiles keep the decode sizes, where they were tuned). The
product is fp8_linear's: (x @ w^T) * per-token scales * per-channel scales, rounded to bf16, with the tensor
cores' fast accumulation (fp8_linear's default on Hopper). A/B it in one process with a variant:

    python benchmarks/llm_ttft_breakdown.py --isls 1024 2048 \\
        --variant base off:modelgate.kernels.fp8_gemm_cublas.SCALED_MM_MIN_M=0
"""

from __future__ import annotations

import functools

import torch

# fp8_linear hands GEMMs of at least this many rows to cuBLAS (where it takes these operands); 0: never.
SCALED_MM_MIN_M = 257
# ... except GEMMs with K >= 3 N (a down projection) of at least this many rows, where the Triton tiles were faster.
LONG_K_OURS_MIN_M = 2048


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
    """The switch is on, the GEMM has SCALED_MM_MIN_M rows or more (and is not a long-K one of LONG_K_OURS_MIN_M
    rows or more), and cuBLAS takes it as fp8_linear has it: no bias, bf16 out, fast accumulation, K and N
    multiples of 16, contiguous operands."""
    if SCALED_MM_MIN_M <= 0 or M < SCALED_MM_MIN_M or bias or precise_accumulation:
        return False
    if K >= 3 * N and M >= LONG_K_OURS_MIN_M:
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
    # The switch and the row count first: every eager GEMM of fp8_linear (and the SiLU fusion's plan) asks.
    if SCALED_MM_MIN_M <= 0 or x_fp8.shape[0] < SCALED_MM_MIN_M or x_scales is None or not x_fp8.is_cuda:
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
