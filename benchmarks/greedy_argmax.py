"""Greedy sampling's argmax over a Llama-3 vocabulary (128256) on one CUDA GPU: the sampler's two-stage
`greedy_tokens` (backends/llm/sampler.py) against torch's argmax, batch 1 and 64, fp32 logits.

Times from benchmarks/gpu_timing.py (CUDA graphs of 20 calls, the two replayed in turns, best of 5 rounds).
Without a GPU it says so and exits 0.

    python benchmarks/greedy_argmax.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOCAB = 128256


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    from benchmarks.gpu_timing import interleaved_rounds_ms
    from modelgate.backends.llm.sampler import greedy_tokens

    print(f"{torch.cuda.get_device_name()}, vocabulary {VOCAB}, fp32 logits; microseconds per call")
    print(f"{'batch':>6}{'torch argmax':>14}{'greedy_tokens':>15}{'ratio':>7}")
    for rows in (1, 64):
        logits = torch.randn(rows, VOCAB, device="cuda")
        assert torch.equal(greedy_tokens(logits), logits.argmax(-1))
        times = interleaved_rounds_ms({"argmax": lambda: logits.argmax(-1), "chunked": lambda: greedy_tokens(logits)})
        argmax_us, chunked_us = times.best("argmax") * 1e3, times.best("chunked") * 1e3
        print(f"{rows:>6}{argmax_us:>14.1f}{chunked_us:>15.1f}{argmax_us / chunked_us:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
