"""Host time of a mixed step's attention launches, the kernels left out (issue 18).

A step that mixes prefills and decodes runs its attention eagerly between the piecewise graphs' pieces, so
every layer pays `TritonPagedAttention._attend`'s Python in the host's time: cutting the step's runs into
launches, their bounds, the views of q. This times it over the layers of one step (default: 256 decodes at
context 200 beside one 512-token chunk, Llama-3-8B's 32 layers and heads) with both mixed-step paths
(`decodes_in_mixed_steps` off: the prefill kernel's short-query tile; on: the decode kernel), the kernels
themselves replaced by no-ops, on the CPU (the Triton interpreter only stands in for the device here).

    python benchmarks/mixed_step_attention_host.py [--decodes 256] [--chunk 512] [--layers 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["TRITON_INTERPRET"] = "1"  # before kernels/ is imported: the attention accepts CPU tensors

import torch  # noqa: E402

from modelgate.backends.llm.attention import triton_paged  # noqa: E402
from modelgate.backends.llm.attention.metadata import AttentionMetadata  # noqa: E402


def step_metadata(decodes: int, context: int, chunk: int) -> AttentionMetadata:
    query_lens = [1] * decodes + [chunk]
    query_start = [0]
    for length in query_lens:
        query_start.append(query_start[-1] + length)
    context_lens = [context] * decodes + [context + chunk]
    blocks = -(-max(context_lens) // 16)
    return AttentionMetadata(
        torch.zeros(query_start[-1], dtype=torch.int64),
        torch.tensor(query_start, dtype=torch.int32),
        torch.tensor(context_lens, dtype=torch.int32),
        torch.zeros(len(query_lens), blocks, dtype=torch.int32),
        query_start,
        context_lens,
        max(context_lens),
        False,
    )


def host_us_per_step(attention, args, repeats: int = 30) -> float:
    """Median over `repeats` fresh steps (what a step derives once is derived again for each)."""
    samples = []
    for _ in range(repeats):
        metadata = step_metadata(args.decodes, args.context, args.chunk)
        q = torch.zeros(metadata.query_start_cpu[-1], 32, 128)
        start = time.perf_counter()
        for _layer in range(args.layers):
            attention._attend(q, None, None, None, metadata, None, None, q)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decodes", type=int, default=256)
    parser.add_argument("--context", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()
    triton_paged.prefill_attention = lambda *arguments, **keywords: None
    triton_paged.paged_decode_attention = lambda *arguments, **keywords: None
    attention = triton_paged.TritonPagedAttention(32, 8, 128, device="cpu")
    print(f"{args.decodes} decodes at context {args.context} + one {args.chunk}-token chunk, {args.layers} layers")
    print("| mixed-step path | host µs per step | per layer |")
    print("| --- | --- | --- |")
    for label, on in (("prefill kernel, short-query tile", False), ("decode kernel", True)):
        attention.decodes_in_mixed_steps = on
        per_step = host_us_per_step(attention, args)
        print(f"| {label} | {per_step:.0f} | {per_step / args.layers:.1f} |")


if __name__ == "__main__":
    main()
