"""One token through the 8B projections: kernels/fp8_gemv.py against the FP8 GEMM, torch._scaled_mm and bf16.

A single token's linear is bound by reading the weights, so each row gives GB/s (weight + scale bytes per
time) and its fraction of the device-to-device copy bandwidth measured in the same run (bytes read + written),
beside: our tensor-core GEMM at M = 1 (with its activation quantization, as the engine ran it before the
GEMV), torch._scaled_mm rowwise at M = 1 (quantization excluded) and torch's bf16 linear.

Times are medians of CUDA-graph replays (benchmarks/decode_attention.py's time_ms: 20 calls per graph, so
Python launch cost stays out, as in the engine's decode graphs); each call reads the next of several weight
copies, together at least 120 MB, so that L2 (50 MB) never holds the weights, as in a real decode.

    python benchmarks/fp8_gemv.py            # the default config
    python benchmarks/fp8_gemv.py --sweep    # also other block sizes, warps and programs per SM
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.decode_attention import memory_bandwidths, time_ms  # noqa: E402
from benchmarks.fp8_gemm import LLAMA3_8B  # noqa: E402
from benchmarks.gpu_timing import COLD_BYTES, rotating  # noqa: E402


def sweep_configs():
    from modelgate.kernels.fp8_gemv import GemvConfig

    for block_n, block_k, warps, per_sm in itertools.product((8, 16, 32, 64), (512, 1024), (4, 8), (2, 3, 4, 8)):
        yield GemvConfig(block_n, block_k, warps, per_sm)


def registers_per_thread(kernel) -> str:
    """Registers (and spills) of each compiled variant of `kernel` so far: what bounds programs per SM."""
    try:
        variants = [compiled for cache in kernel.device_caches.values() for compiled in cache[0].values()]
        return " ".join(f"{c.n_regs}r/{c.n_spills}s" for c in variants)
    except (AttributeError, IndexError, TypeError):  # the cache layout of another triton version
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    from modelgate.kernels.fp8_gemm import fp8_linear_from_activations
    from modelgate.kernels.fp8_gemv import DEFAULT_CONFIG, _fp8_gemv_kernel, fp8_gemv
    from modelgate.kernels.fp8_quant import quantize_per_token, quantize_weight_per_channel

    copy_bw, read_bw = memory_bandwidths()
    print(f"{torch.cuda.get_device_name()}: copy {copy_bw:.0f} GB/s (read + write), read-only {read_bw:.0f} GB/s")
    print(
        f"{'layer':<8}{'N':>6}{'K':>6}{'gemv us':>9}{'GB/s':>7}{'/read':>7}{'gemm+q us':>11}{'scaled_mm us':>14}"
        f"{'bf16 us':>9}{'gemm/gemv':>11}{'scaled_mm/gemv':>16}  best sweep config"
    )
    for layer, (N, K) in LLAMA3_8B.items():
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        copies = max(1, math.ceil(COLD_BYTES / (N * K)))
        weights = [
            quantize_weight_per_channel(torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05)
            for _ in range(copies)
        ]
        x_fp8, x_scales = quantize_per_token(x)
        gemv = time_ms(rotating(lambda i: lambda: fp8_gemv(x, *weights[i]), copies)) * 1e3
        gemm = time_ms(rotating(lambda i: lambda: fp8_linear_from_activations(x, *weights[i]), copies)) * 1e3
        scaled = (
            time_ms(
                rotating(
                    lambda i: (
                        lambda: torch._scaled_mm(
                            x_fp8,
                            weights[i][0].t(),
                            scale_a=x_scales[:, None],
                            scale_b=weights[i][1][None, :],
                            out_dtype=torch.bfloat16,
                        )
                    ),
                    copies,
                )
            )
            * 1e3
        )
        bf16_copies = max(1, math.ceil(COLD_BYTES / (2 * N * K)))
        bf16_weights = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(bf16_copies)]
        bf16 = time_ms(rotating(lambda i: lambda: torch.nn.functional.linear(x, bf16_weights[i]), bf16_copies)) * 1e3
        best = ""
        if args.sweep:
            timed = sorted(
                (time_ms(rotating(lambda i, c=c: lambda: fp8_gemv(x, *weights[i], config=c), copies)) * 1e3, tuple(c))
                for c in sweep_configs()
            )
            best = "  " + "; ".join(f"{us:.1f} us {config}" for us, config in timed[:4])
            best += f" (default {tuple(DEFAULT_CONFIG)})"
        gbs = (N * K + 4 * N) / gemv / 1e3
        print(
            f"{layer:<8}{N:>6}{K:>6}{gemv:>9.1f}{gbs:>7.0f}{gbs / read_bw:>7.2f}{gemm:>11.1f}{scaled:>14.1f}"
            f"{bf16:>9.1f}{gemm / gemv:>11.2f}{scaled / gemv:>16.2f}{best}",
            flush=True,
        )
    print(f"registers per thread of the compiled GEMVs: {registers_per_thread(_fp8_gemv_kernel)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
