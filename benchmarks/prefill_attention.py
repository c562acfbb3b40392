"""Prefill attention against the GPU's matmul rate, same run: the paged Triton kernel and FlashAttention.

Causal attention of fresh prompts (no cached prefix) at Llama-3-8B's shape (32 query heads over 8 KV heads,
head_dim 128, block 16), per layer:
  - `paged triton fp8` / `paged triton bf16`: kernels/prefill_attention.py reading K/V from the paged cache
    (what every prefill used before attention/fresh_prefill.py; what chunks over a cached prefix use), and
    `paged triton fp8 words` with the FP8 cache read as int32 words (prefill_attention.FP8_WORDS);
  - `varlen flash`: torch's FlashAttention `varlen_attn` over the step's dense bf16 K/V, every sequence in one
    call (the engine's fresh-sequence path before session 27);
  - `engine (cuDNN from 512)`: the engine's fresh-sequence path now (attention/fresh_prefill.py): sequences of
    DENSE_MIN_TOKENS or more through cuDNN's attention one at a time, shorter ones in the varlen call;
  - `sdpa cudnn` / `sdpa flash`: torch's scaled_dot_product_attention on the same K/V, the prompts as one
    [seqs, heads, isl, head_dim] batch (equal lengths), K/V heads repeated beforehand (not timed) or passed as
    they are with enable_gqa (`... gqa`), with its backend forced: what a cuDNN (FlashAttention-3-class on
    Hopper) call would give against the varlen one;
  - the floor: the causal attention's FLOPs (QK^T and PV over the visible half) at the bf16 matmul rate
    torch.mm reaches on 8192^3 in the same run.
Each contender's output is checked against the plain-torch reference first (relative error printed). Times
are medians of 20 event-timed calls after 3 warm-up calls (each call is milliseconds long: launch overhead
does not count).

    python benchmarks/prefill_attention.py
    python benchmarks/prefill_attention.py --cases 1024x16 4096x4 8192x1
    python benchmarks/prefill_attention.py --cases 1024x1 --new-lengths 20   # + first calls at new lengths

Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.switches import parse_variant, switched  # noqa: E402

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
DEFAULT_CASES = ("1024x1", "1024x16", "4096x1", "4096x4", "8192x2")
DEVICE = "cuda"


def median_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def matmul_tflops() -> float:
    a = torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16)
    return 2 * 8192**3 / median_ms(lambda: torch.mm(a, b)) / 1e9


def causal_flops(isl: int, seqs: int) -> float:
    """QK^T and PV multiply-adds over the visible (causal) pairs, all heads."""
    pairs = isl * (isl + 1) / 2
    return seqs * NUM_HEADS * pairs * HEAD_DIM * 2 * 2


def make_case(isl: int, seqs: int, generator: torch.Generator):
    """Dense q/k/v of `seqs` fresh prompts of `isl` tokens, and the paged caches (bf16, FP8) holding their K/V."""
    from modelgate.kernels.reshape_and_cache import allocate_kv_cache, reshape_and_cache

    tokens = isl * seqs
    q = torch.randn((tokens, NUM_HEADS, HEAD_DIM), generator=generator).to(DEVICE, torch.bfloat16)
    k = torch.randn((tokens, NUM_KV_HEADS, HEAD_DIM), generator=generator).to(DEVICE, torch.bfloat16)
    v = torch.randn((tokens, NUM_KV_HEADS, HEAD_DIM), generator=generator).to(DEVICE, torch.bfloat16)
    blocks_per_seq = -(-isl // BLOCK_SIZE)
    num_blocks = seqs * blocks_per_seq
    order = torch.randperm(num_blocks, generator=generator)
    block_tables = order.view(seqs, blocks_per_seq).to(torch.int32).to(DEVICE)
    positions = torch.arange(isl, device=DEVICE)
    slots = (block_tables.long()[:, positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE).reshape(-1)
    caches = {}
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        kv_cache, kv_scales = allocate_kv_cache(num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, dtype, DEVICE)
        reshape_and_cache(k, v, kv_cache, slots, kv_scales)
        caches[dtype] = (kv_cache, kv_scales)
    query_start = torch.arange(0, tokens + 1, isl, dtype=torch.int32, device=DEVICE)
    context_lens = torch.full((seqs,), isl, dtype=torch.int32, device=DEVICE)
    return q, k, v, caches, block_tables, query_start, context_lens


def contenders(isl: int, case) -> dict:
    from modelgate.backends.llm.attention.fresh_prefill import (
        FreshPrefillAttention,
        SequenceRun,
        torch_cudnn_attn,
        torch_varlen_attn,
    )
    from modelgate.kernels.prefill_attention import prefill_attention

    q, k, v, caches, block_tables, query_start, context_lens = case
    scale = HEAD_DIM**-0.5
    calls = {}
    for name, dtype in (("paged triton fp8", torch.float8_e4m3fn), ("paged triton bf16", torch.bfloat16)):
        kv_cache, kv_scales = caches[dtype]
        calls[name] = lambda kv_cache=kv_cache, kv_scales=kv_scales: prefill_attention(
            q, kv_cache, block_tables, query_start, context_lens, isl, kv_scales=kv_scales, softmax_scale=scale
        )
    fp8_cache, fp8_scales = caches[torch.float8_e4m3fn]

    def fp8_words():
        with switched(parse_variant("words:modelgate.kernels.prefill_attention.FP8_WORDS=True")):
            return prefill_attention(
                q, fp8_cache, block_tables, query_start, context_lens, isl, kv_scales=fp8_scales, softmax_scale=scale
            )

    calls["paged triton fp8 words"] = fp8_words
    varlen = torch_varlen_attn()
    if varlen is not None:
        run = SequenceRun(0, len(context_lens), True)
        starts = query_start.tolist()
        engine_paths = {"varlen flash": None, "engine (cuDNN from 512)": torch_cudnn_attn()}
        for name, dense_attn in engine_paths.items():
            fresh = FreshPrefillAttention(varlen, NUM_HEADS, NUM_KV_HEADS, scale, None, dense_attn=dense_attn)

            def attend(fresh=fresh):
                out = torch.empty_like(q)
                fresh.attend(q, k, v, query_start, starts, run, out)
                return out

            calls[name] = attend
    calls.update(_sdpa_contenders(q, k, v, len(context_lens), isl, scale))
    return calls


def _sdpa_contenders(q, k, v, seqs: int, isl: int, scale: float) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tokens = q.shape[0]
    batch_q = q.view(seqs, isl, NUM_HEADS, HEAD_DIM).transpose(1, 2)
    group = NUM_HEADS // NUM_KV_HEADS
    batch_k, batch_v = (
        t.view(seqs, isl, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).repeat_interleave(group, dim=1) for t in (k, v)
    )
    grouped_k, grouped_v = (t.view(seqs, isl, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2) for t in (k, v))
    calls = {}
    variants = (
        ("sdpa cudnn", SDPBackend.CUDNN_ATTENTION, False),
        ("sdpa flash", SDPBackend.FLASH_ATTENTION, False),
        ("sdpa cudnn gqa", SDPBackend.CUDNN_ATTENTION, True),  # K/V heads as they are, enable_gqa
        ("sdpa flash gqa", SDPBackend.FLASH_ATTENTION, True),
    )
    for name, backend, gqa in variants:
        keys, values = (grouped_k, grouped_v) if gqa else (batch_k, batch_v)

        def call(backend=backend, keys=keys, values=values, gqa=gqa):
            with sdpa_kernel(backend):
                out = torch.nn.functional.scaled_dot_product_attention(
                    batch_q, keys, values, is_causal=True, scale=scale, enable_gqa=gqa
                )
            return out.transpose(1, 2).reshape(tokens, NUM_HEADS, HEAD_DIM)

        calls[name] = call
    return calls


def reference(case) -> torch.Tensor:
    from modelgate.kernels.prefill_attention import prefill_attention_reference

    q, _, _, caches, block_tables, query_start, context_lens = case
    kv_cache, _ = caches[torch.bfloat16]
    return prefill_attention_reference(q, kv_cache, block_tables, query_start, context_lens)


def new_lengths(count: int, generator: torch.Generator) -> None:
    """The engine's fresh-prompt attention with the cuDNN call, one layer, at `count` prompt lengths it has not
    seen (512-8192 tokens): wall time of the first call at each length (torch builds a cuDNN graph for a new
    shape) against a repeat call, host and device together, synchronized; the varlen call beside it."""
    from modelgate.backends.llm.attention.fresh_prefill import (
        DENSE_BUCKET_TOKENS,
        FreshPrefillAttention,
        SequenceRun,
        torch_cudnn_attn,
        torch_varlen_attn,
    )

    scale = HEAD_DIM**-0.5
    paths = {
        "cuDNN": FreshPrefillAttention(
            torch_varlen_attn(), NUM_HEADS, NUM_KV_HEADS, scale, None, dense_attn=torch_cudnn_attn()
        ),
        "varlen": FreshPrefillAttention(torch_varlen_attn(), NUM_HEADS, NUM_KV_HEADS, scale, None),
    }
    lengths = torch.randint(512, 8193, (count,), generator=generator).tolist()
    print(f"\nnew prompt lengths, one layer, buckets of {DENSE_BUCKET_TOKENS} tokens: ms first call / repeat")
    for length in lengths:
        qkv = torch.randn(length, NUM_HEADS + 2 * NUM_KV_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        q, k, v = qkv.split([NUM_HEADS, NUM_KV_HEADS, NUM_KV_HEADS], dim=1)
        bounds = [0, length]
        query_start = torch.tensor(bounds, dtype=torch.int32, device="cuda")
        out = torch.empty_like(q)
        cells = []
        for name, path in paths.items():
            times = []
            for _ in range(2):
                torch.cuda.synchronize()
                started = time.perf_counter()
                path.attend(q, k, v, query_start, bounds, SequenceRun(0, 1, True), out)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - started) * 1e3)
            cells.append(f"{name} {times[0]:8.2f} / {times[1]:6.2f}")
        print(f"{length:>6} tokens: " + "   ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="ISLxSEQUENCES (fresh prompts)")
    parser.add_argument(
        "--new-lengths", type=int, default=0, help="then time first calls at this many unseen prompt lengths"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to measure")
        return 0
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    rate = matmul_tflops()
    print(f"bf16 matmul (torch.mm 8192^3): {rate:,.0f} TFLOP/s")
    generator = torch.Generator().manual_seed(0)
    header = f"{'case':>10} {'contender':>18} | {'ms':>8} {'TFLOP/s':>8} {'x floor':>8} {'rel err':>8}"
    print(header)
    print("-" * len(header))
    for text in args.cases:
        isl, seqs = (int(part) for part in text.split("x"))
        case = make_case(isl, seqs, generator)
        expected = reference(case).float()
        flops = causal_flops(isl, seqs)
        floor_ms = flops / rate / 1e9
        print(f"{text:>10} {'floor':>18} | {floor_ms:8.3f} {rate:8.0f} {1.0:8.2f} {'':>8}")
        for name, call in contenders(isl, case).items():
            try:
                error = ((call().float() - expected).norm() / expected.norm()).item()
            except RuntimeError as exc:  # a backend this torch or GPU lacks
                print(f"{text:>10} {name:>18} | not run: {str(exc).splitlines()[0][:90]}")
                continue
            ms = median_ms(call)
            print(f"{text:>10} {name:>18} | {ms:8.3f} {flops / ms / 1e9:8.0f} {ms / floor_ms:8.2f} {error:8.1e}")
        del case, expected
        torch.cuda.empty_cache()
    if args.new_lengths:
        new_lengths(args.new_lengths, generator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
