"""SwiGLU's first half at Llama 3 8B sizes: the gate | up GEMM with SiLU-and-mul in its epilogue against the
unfused kernels, and both against torch._scaled_mm.

For each token count M (2 and more: one token takes the GEMV, which fuses SiLU-and-mul its own way), on one CUDA
GPU; decode sizes (M <= 64) run the TMA kernels on Hopper, fused and unfused alike:
  - unfused: kernels/fp8_gemm.py's GEMM writing [M, 2I] bf16 (the table's config), then
    kernels/silu_and_mul_split.py (SiLU-and-mul and per-token FP8 quantization, two kernels): the engine before;
  - fused: kernels/fp8_gemm_silu.py (the GEMM's epilogue writes y = silu(gate) * up and its amaxes, then one
    quantization kernel): the engine now;
  - the peer: torch._scaled_mm on the same operands (per-token and per-channel scales, bf16 out), the GEMM
    alone, which the fused pair should approach.
Weights rotate over copies (benchmarks/gpu_timing.py's rotating: more than L2 in total), so each call reads its
weights from HBM as a forward pass does; times are the best round of interleaved CUDA-graph replays. The fused
output must equal the unfused one bit for bit (both take their default kernels and tiles; checked first).

    python benchmarks/fp8_gemm_silu.py [--tokens 65 128 256 512 1024 2048 4096]

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HIDDEN, INTER = 4096, 14336


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[65, 128, 256, 512, 1024, 2048, 4096])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return
    from benchmarks.gpu_timing import COLD_BYTES, interleaved_rounds_ms, our_gemm_kernels_only, rotating
    from modelgate.kernels.fp8_gemm import fp8_linear
    from modelgate.kernels.fp8_gemm_silu import fp8_linear_silu, plan_silu_fusion
    from modelgate.kernels.fp8_quant import FP8_DTYPE, quantize_per_token
    from modelgate.kernels.silu_and_mul_split import silu_and_mul_fp8_split

    our_gemm_kernels_only()  # unfused: our GEMM at every M (the engine's cuBLAS above 256 rows is the peer column)
    device = torch.device("cuda")
    copies = max(1, int(-(-COLD_BYTES // (2 * INTER * HIDDEN))))
    weights = [(torch.randn(2 * INTER, HIDDEN, device=device) * 0.05).to(FP8_DTYPE) for _ in range(copies)]
    w_scales = [torch.rand(2 * INTER, device=device) * 1e-2 + 1e-3 for _ in range(copies)]
    print(f"device: {torch.cuda.get_device_name()}, gate | up [{2 * INTER}, {HIDDEN}], {copies} weight copies")
    print("| M | unfused µs | fused µs | _scaled_mm µs | unfused / fused | fused / _scaled_mm | fused TFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for tokens in args.tokens:
        x_fp8, x_scales = quantize_per_token(torch.randn(tokens, HIDDEN, device=device).to(torch.bfloat16))
        if plan_silu_fusion(x_fp8, weights[0]) is None:
            print(f"| {tokens} | no fused kernel (split K, or no TMA at decode sizes) | | | | | |")
            continue
        fused = fp8_linear_silu(x_fp8, x_scales, weights[0], w_scales[0])
        unfused = silu_and_mul_fp8_split(fp8_linear(x_fp8, x_scales, weights[0], w_scales[0]))
        if not (torch.equal(fused.values.view(torch.uint8), unfused.values.view(torch.uint8))) or not torch.equal(
            fused.scales, unfused.scales
        ):
            raise SystemExit(f"M {tokens}: the fused output differs from the unfused one")

        def unfused_call(i, x_fp8=x_fp8, x_scales=x_scales):
            return lambda: silu_and_mul_fp8_split(fp8_linear(x_fp8, x_scales, weights[i], w_scales[i]))

        def fused_call(i, x_fp8=x_fp8, x_scales=x_scales):
            return lambda: fp8_linear_silu(x_fp8, x_scales, weights[i], w_scales[i])

        def peer_call(i, x_fp8=x_fp8, x_scales=x_scales):
            b, a_scale, b_scale = weights[i].t(), x_scales[:, None], w_scales[i][None, :]
            return lambda: torch._scaled_mm(x_fp8, b, scale_a=a_scale, scale_b=b_scale, out_dtype=torch.bfloat16)

        times = interleaved_rounds_ms(
            {
                "unfused": rotating(unfused_call, copies),
                "fused": rotating(fused_call, copies),
                "peer": rotating(peer_call, copies),
            }
        )
        unfused_us, fused_us = 1e3 * times.best("unfused"), 1e3 * times.best("fused")
        peer = times.best("peer")
        peer_us = 1e3 * peer if peer is not None else float("nan")
        tflops = 2 * tokens * 2 * INTER * HIDDEN / (fused_us * 1e-6) / 1e12
        print(
            f"| {tokens} | {unfused_us:.1f} | {fused_us:.1f} | {peer_us:.1f} | {unfused_us / fused_us:.2f} "
            f"| {fused_us / peer_us:.2f} | {tflops:.0f} |",
            flush=True,
        )
        if times.errors:
            print(f"  left out: {times.errors}")


if __name__ == "__main__":
    main()
