"""The TMA-loaded FP8 GEMM (kernels/fp8_gemm_tma.py) against the cp.async one (kernels/fp8_gemm.py), decode sizes.

On the Llama 3 8B projections at M = 16 ... 256 (per-token and per-channel scales, bf16 out), on one CUDA GPU:
  - ours: fp8_linear as the engine calls it (on Hopper, decode sizes take the TMA kernel: select_tma_config);
  - cp.async: fp8_linear's own kernel with select_config's tiles (split-K where it picks it);
  - tma: fp8_linear_tma with its default config (select_tma_config; select_config's tiles above M = 64);
  - persist: the persistent TMA kernel (kernels/fp8_gemm_tma_persistent.py) in select_config's tiles, one
    program per SM (prefill sizes: --tokens 512 1024 2048);
  - sc_mm: torch._scaled_mm with rowwise scales;
  - floor: the weight bytes / the read-only bandwidth measured in the same run (at these M the weights
    dominate what must be read).
Weights are colder than L2 (rotating copies) and every call is timed from interleaved CUDA-graph replays
(benchmarks/gpu_timing.py). Prints microseconds, the floor's share of each time, and cp.async / ours.

    python benchmarks/fp8_gemm_tma.py [--tokens 16 32 64 256]
    python benchmarks/fp8_gemm_tma.py --sweep --tokens 64    # + the TMA kernel over SWEEP's tiles, best per layer
    python benchmarks/fp8_gemm_tma.py --sweep --tokens 1024  # + the persistent kernel over fp8_gemm.py's tiles

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# --sweep: (block_n, block_k, num_stages, split_k) at block_m 64, 4 warps (decode sizes: narrower tiles put
# more SMs on the weights; TMA stages cost no registers, so deeper pipelines are cheap).
SWEEP = (
    (32, 256, 4, 1),
    (32, 256, 6, 1),
    (32, 128, 6, 1),
    (32, 128, 8, 1),
    (64, 256, 3, 1),
    (64, 256, 4, 1),
    (64, 128, 6, 1),
    (64, 128, 8, 1),
    (64, 256, 4, 2),
    (32, 256, 4, 2),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 64, 256])
    parser.add_argument(
        "--sweep", action="store_true", help="also the TMA kernel over SWEEP's tiles (the persistent one above M = 64)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return
    from benchmarks.decode_attention import memory_bandwidths
    from benchmarks.fp8_gemm import LLAMA3_8B
    from benchmarks.gpu_timing import COLD_BYTES, interleaved_rounds_ms, our_gemm_kernels_only, rotating
    from modelgate.kernels.fp8_gemm import fp8_linear, num_sms_of, select_config
    from modelgate.kernels.fp8_gemm_tma import fp8_linear_tma
    from modelgate.kernels.fp8_gemm_tma_persistent import launch_fp8_gemm_tma_persistent
    from modelgate.kernels.fp8_quant import quantize_per_token_reference

    our_gemm_kernels_only()  # "ours": the Triton kernels above 256 rows too

    def persistent(x_fp8, x_scales, w_fp8, w_scales):
        out = torch.empty((x_fp8.shape[0], w_fp8.shape[0]), dtype=torch.bfloat16, device=x_fp8.device)
        return launch_fp8_gemm_tma_persistent(x_fp8, x_scales, w_fp8, w_scales, out)

    _, read_gbs = memory_bandwidths()
    print(f"device: {torch.cuda.get_device_name()}, read-only bandwidth {read_gbs:.0f} GB/s")
    print(f"{'layer':>8} {'M':>5} {'floor us':>9} {'ours us':>8} {'cp.async':>9} {'tma us':>8} {'persist':>8}", end="")
    print(f" {'sc_mm us':>9}", end="")
    print(f" {'floor/ours':>11} {'floor/sc_mm':>12} {'cp.async/ours':>14}")
    for M in args.tokens:
        for layer, (N, K) in LLAMA3_8B.items():
            x_fp8, x_scales = quantize_per_token_reference(torch.randn(M, K, device="cuda"))
            copies = max(2, int(COLD_BYTES // (N * K)) + 1)
            weights = []
            for _ in range(copies):
                w_fp8, w_scales = quantize_per_token_reference(torch.randn(N, K, device="cuda") * 0.05)
                weights.append((w_fp8, w_scales))
            own = select_config(M, N, K, num_sms_of(x_fp8.device))
            ours = fp8_linear(x_fp8, x_scales, *weights[0])
            for name, other in (
                ("cp.async", fp8_linear(x_fp8, x_scales, *weights[0], config=own)),
                ("tma", fp8_linear_tma(x_fp8, x_scales, *weights[0])),
                ("persist", persistent(x_fp8, x_scales, *weights[0])),
            ):
                error = ((other.float() - ours.float()).norm() / ours.float().norm()).item()
                if error > 1e-2:
                    raise SystemExit(f"{layer} M={M}: {name} differs from fp8_linear (relative error {error:.2e})")

            def scaled_mm(w_fp8, w_scales):
                return torch._scaled_mm(
                    x_fp8, w_fp8.t(), scale_a=x_scales[:, None], scale_b=w_scales[None, :], out_dtype=torch.bfloat16
                )

            calls = {
                "ours": rotating(lambda i: lambda: fp8_linear(x_fp8, x_scales, *weights[i]), copies),
                "cp.async": rotating(lambda i: lambda: fp8_linear(x_fp8, x_scales, *weights[i], config=own), copies),
                "tma": rotating(lambda i: lambda: fp8_linear_tma(x_fp8, x_scales, *weights[i]), copies),
                "persist": rotating(lambda i: lambda: persistent(x_fp8, x_scales, *weights[i]), copies),
                "sc_mm": rotating(lambda i: lambda: scaled_mm(*weights[i]), copies),
            }
            times = interleaved_rounds_ms(calls)
            floor_us = N * K / (read_gbs * 1e3)
            us = {name: 1e3 * times.best(name) if times.best(name) else float("nan") for name in calls}
            print(
                f"{layer:>8} {M:>5} {floor_us:>9.1f} {us['ours']:>8.1f} {us['cp.async']:>9.1f} {us['tma']:>8.1f}"
                f" {us['persist']:>8.1f} {us['sc_mm']:>9.1f}",
                end="",
            )
            print(
                f" {floor_us / us['ours']:>11.2f} {floor_us / us['sc_mm']:>12.2f} {us['cp.async'] / us['ours']:>14.2f}"
            )
            for name, error_text in times.errors.items():
                print(f"    {name}: {error_text}")
            if args.sweep:
                sweep_layer(x_fp8, x_scales, weights, copies, floor_us, us["ours"])


def sweep_layer(x_fp8, x_scales, weights, copies, floor_us, ours_us) -> None:
    """One layer's candidates, each timed, with its floor share and speed-up on ours: at decode sizes the TMA
    kernel over SWEEP's tiles; above them the persistent TMA kernel over fp8_gemm.py's prefill candidates."""
    from benchmarks.fp8_gemm import config_name, sweep_candidates
    from benchmarks.gpu_timing import interleaved_rounds_ms, rotating
    from modelgate.kernels.fp8_gemm import DECODE_MAX_M, Fp8GemmConfig
    from modelgate.kernels.fp8_gemm_tma import fp8_linear_tma
    from modelgate.kernels.fp8_gemm_tma_persistent import launch_fp8_gemm_tma_persistent

    M, N = x_fp8.shape[0], weights[0][0].shape[0]

    def persistent(config, w_fp8, w_scales):
        out = torch.empty((M, N), dtype=torch.bfloat16, device=x_fp8.device)
        return launch_fp8_gemm_tma_persistent(x_fp8, x_scales, w_fp8, w_scales, out, config)

    def per_tile(config, w_fp8, w_scales):
        return fp8_linear_tma(x_fp8, x_scales, w_fp8, w_scales, config=config)

    if M <= DECODE_MAX_M:
        kind, run = "tma", per_tile
        configs = [Fp8GemmConfig(64, bn, bk, num_stages=stages, split_k=split) for bn, bk, stages, split in SWEEP]
    else:
        kind, run, configs = "persist", persistent, sweep_candidates(M)
    calls = {
        config_name(config): rotating(lambda i, config=config: lambda: run(config, *weights[i]), copies)
        for config in configs
    }
    times = interleaved_rounds_ms(calls)
    ranked = sorted((times.best(name), name) for name in calls if times.best(name))
    for ms, name in ranked:
        print(
            f"    {kind} {name:<26} {1e3 * ms:>7.1f} us  floor/{kind} {floor_us / (1e3 * ms):.2f}"
            f"  ours/{kind} {ours_us / (1e3 * ms):.2f}"
        )
    for name, error_text in times.errors.items():
        print(f"    {kind} {name}: {error_text}")


if __name__ == "__main__":
    main()
