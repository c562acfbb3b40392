"""Host time of a mixed step's attention launches, the kernels left out (issue 18).

A step that mixes prefills and decodes runs its attention eagerly between the piecewise graphs' pieces, so
every layer pays `TritonPagedAttention._attend`'s Python in the host's time: cutting the step's runs into
launches, their bounds, the views of q. This times it over the layers of one step (default: 256 decodes at
context 200 beside one 512-token chunk and one fresh 128-token prompt, Llama-3-8B's 32 layers and heads, bf16)
with both mixed-step paths
(`decodes_in_mixed_steps` off: the prefill kernel's short-query tile; on: the decode kernel), the kernels
themselves replaced by no-ops, on the CPU (the Triton interpreter only stands in for the device here).

    python benchmarks/mixed_step_attention_host.py [--decodes 256] [--chunk 512] [--fresh 128] [--layers 32]
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


def step_metadata(decodes: int, context: int, chunk: int, fresh: int) -> AttentionMetadata:
    """The scheduler's order: running sequences (decodes, then a chunk over its cached prefix), new ones last."""
    query_lens = [1] * decodes + [chunk] + ([fresh] if fresh else [])
    query_start = [0]
    for length in query_lens:
        query_start.append(query_start[-1] + length)
    context_lens = [context] * decodes + [context + chunk] + ([fresh] if fresh else [])
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


def no_varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    return q


def host_us_per_step(attention, args, repeats: int = 30) -> float:
    """Median over `repeats` fresh steps (what a step derives once is derived again for each)."""
    samples = []
    for _ in range(repeats):
        metadata = step_metadata(args.decodes, args.context, args.chunk, args.fresh)
        q = torch.zeros(metadata.query_start_cpu[-1], 32, 128, dtype=torch.bfloat16)
        k = v = torch.zeros(metadata.query_start_cpu[-1], 8, 128, dtype=torch.bfloat16)
        runs = attention._runs_with_fresh(q, metadata)
        start = time.perf_counter()
        for _layer in range(args.layers):
            attention._attend(q, k, v, None, metadata, None, runs, q)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decodes", type=int, default=256)
    parser.add_argument("--context", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--fresh", type=int, default=128, help="a fresh prompt's tokens (0: none)")
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()
    triton_paged.prefill_attention = lambda *arguments, **keywords: None
    triton_paged.paged_decode_attention = lambda *arguments, **keywords: None
    attention = triton_paged.TritonPagedAttention(32, 8, 128, device="cpu")
    # FlashAttention's varlen call as torch's signature has it, a no-op (so its trial against the reference is
    # skipped): the fresh prompt's path costs its Python
    attention.varlen_attn = no_varlen_attn
    triton_paged.varlen_works = lambda *arguments: True
    print(
        f"{args.decodes} decodes at context {args.context} + one {args.chunk}-token chunk + a fresh {args.fresh}-token "
        f"prompt, {args.layers} layers"
    )
    print("| mixed-step path | host µs per step | per layer |")
    print("| --- | --- | --- |")
    for label, on in (("prefill kernel, short-query tile", False), ("decode kernel", True)):
        attention.decodes_in_mixed_steps = on
        per_step = host_us_per_step(attention, args)
        print(f"| {label} | {per_step:.0f} | {per_step / args.layers:.1f} |")


if __name__ == "__main__":
    main()
