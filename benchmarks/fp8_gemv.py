"""One token through the 8B projections: kernels/fp8_gemv.py against the FP8 GEMM, torch._scaled_mm and bf16.

A single token's linear is bound by reading the weights, so each row gives GB/s (weight + scale bytes per
time) and its fraction of the device-to-device copy bandwidth measured in the same run (bytes read + written),
beside: our tensor-core GEMM at M = 1 (activation quantization included, as the engine runs it),
torch._scaled_mm rowwise at M = 1 (quantization excluded), and torch's bf16 linear.

    python benchmarks/fp8_gemv.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fp8_gemm import LLAMA3_8B, bench_ms, copy_bandwidth_gbs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup-ms", type=int, default=25)
    parser.add_argument("--rep-ms", type=int, default=200)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    from kernels.fp8_gemm import fp8_linear_from_activations
    from kernels.fp8_gemv import fp8_gemv
    from kernels.fp8_quant import quantize_per_token, quantize_weight_per_channel

    copy = copy_bandwidth_gbs(args)
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {copy:.0f} GB/s (read + write)")
    print(f"{'layer':<8}{'N':>6}{'K':>6}{'gemv us':>9}{'GB/s':>7}{'/copy':>7}{'gemm+q us':>11}{'scaled_mm us':>14}"
          f"{'bf16 us':>9}{'gemv speed-up vs gemm':>23}")
    for layer, (N, K) in LLAMA3_8B.items():
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
        w_fp8, w_scales = quantize_weight_per_channel(w)
        x_fp8, x_scales = quantize_per_token(x)
        gemv_ms = bench_ms(lambda: fp8_gemv(x, w_fp8, w_scales), args)
        gemm_ms = bench_ms(lambda: fp8_linear_from_activations(x, w_fp8, w_scales), args)
        scaled_ms = bench_ms(lambda: torch._scaled_mm(x_fp8, w_fp8.t(), scale_a=x_scales[:, None],
                                                      scale_b=w_scales[None, :], out_dtype=torch.bfloat16), args)
        bf16_ms = bench_ms(lambda: torch.nn.functional.linear(x, w), args)
        gbs = (N * K + 4 * N) / gemv_ms / 1e6
        print(f"{layer:<8}{N:>6}{K:>6}{gemv_ms * 1e3:>9.1f}{gbs:>7.0f}{gbs / copy:>7.2f}{gemm_ms * 1e3:>11.1f}"
              f"{scaled_ms * 1e3:>14.1f}{bf16_ms * 1e3:>9.1f}{gemm_ms / gemv_ms:>23.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
