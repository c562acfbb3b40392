"""SiLU-and-mul with FP8 output (the Llama MLP's activation before the FP8 down projection) against its floor.

At Llama 3 8B's intermediate size (I = 14336, bf16 gate | up), for each token count, on one CUDA GPU:
  - one program per row (kernels/silu_and_mul.py's single-tile kernel);
  - rows spread over programs (kernels/silu_and_mul_split.py: two column-parallel kernels);
  - torch: silu(gate) * up, then quantize_per_token_reference (the unfused peer);
  - the floor: the bytes that must move (read 4, write 1 per value + the scales) / the read-only bandwidth
    measured in the same run (torch.sum over 1 GiB, as benchmarks/decode_attention.py measures it).
Times are from interleaved CUDA-graph replays (benchmarks/gpu_timing.py); the input stays the same tensor,
so at small token counts it sits in L2 as it does after the gate_up GEMM that writes it. Both kernel paths
must give the same bits (checked first). The last column is the spread path's speed-up.

    python benchmarks/silu_and_mul.py [--tokens 16 64 256 1024 4096]

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

INTER = 14336


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return
    from benchmarks.decode_attention import memory_bandwidths
    from benchmarks.gpu_timing import interleaved_rounds_ms
    from modelgate.kernels.fp8_quant import quantize_per_token_reference
    from modelgate.kernels.silu_and_mul import silu_and_mul
    from modelgate.kernels.silu_and_mul_split import silu_and_mul_fp8_split

    _, read_gbs = memory_bandwidths()
    print(f"device: {torch.cuda.get_device_name()}, read-only bandwidth {read_gbs:.0f} GB/s, I = {INTER}")
    header = f"{'tokens':>7} {'floor us':>9} {'one/row us':>11} {'spread us':>10} {'torch us':>9}"
    print(header + f" {'one/floor':>10} {'spread/floor':>13} {'speed-up':>9}")
    for tokens in args.tokens:
        x = (torch.randn(tokens, 2 * INTER, device="cuda") * 4).to(torch.bfloat16)
        one, spread = silu_and_mul(x, out_fp8=True, spread=False), silu_and_mul_fp8_split(x)
        if not (torch.equal(one.values.view(torch.uint8), spread.values.view(torch.uint8))) or not torch.equal(
            one.scales, spread.scales
        ):
            raise SystemExit(f"tokens {tokens}: the spread path's FP8 output differs from the one-program path's")

        def torch_peer(x=x):
            gate, up = x.chunk(2, dim=-1)
            return quantize_per_token_reference(torch.nn.functional.silu(gate) * up)

        times = interleaved_rounds_ms(
            {
                "one": lambda x=x: silu_and_mul(x, out_fp8=True, spread=False),
                "spread": lambda x=x: silu_and_mul_fp8_split(x),
                "torch": torch_peer,
            }
        )
        floor_us = tokens * (INTER * 5 + 4) / (read_gbs * 1e3)
        one_us, spread_us, torch_us = (1e3 * times.best(name) for name in ("one", "spread", "torch"))
        print(
            f"{tokens:>7} {floor_us:>9.1f} {one_us:>11.1f} {spread_us:>10.1f} {torch_us:>9.1f}"
            f" {one_us / floor_us:>10.2f} {spread_us / floor_us:>13.2f} {one_us / spread_us:>9.2f}"
        )


if __name__ == "__main__":
    main()
