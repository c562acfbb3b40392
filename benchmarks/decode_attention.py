"""Paged decode attention (kernels/paged_decode_attention.py) against the GPU's memory bandwidth, same run.

Decode attention is memory bound: each step reads every cached K/V byte of the batch once. This script
measures, on one CUDA GPU:
  - the copy bandwidth: torch copy of a 1 GiB tensor into another, counting bytes read + written;
  - a read-only bandwidth estimate: torch sum of a 1 GiB tensor, counting the bytes read;
  - the decode kernel at batch 64, contexts 1k and 4k (every sequence at the full context), 32 query heads,
    8 KV heads, head_dim 128, block 16, with bf16 and FP8 KV, for the split plan it picks by default and for
    a few forced plans and tile configs; GB/s = K/V bytes it must read (FP8: values + per-token scales) / time;
  - the engine's current torch path (TorchPagedAttention, bf16 only) as a peer;
  - the same decodes through kernels/prefill_attention.py (one query token per sequence), as a step that mixes
    decodes with prefills attends them, on its default tile and on 16-row ones; with the FP8 cache the default and
    short-query tiles also with the cache read as words (prefill_attention.FP8_WORDS, label "words").
Each variant's output is first checked against the torch reference (relative error < 1e-2, output poisoned
with NaN beforehand). Times are medians of CUDA-graph replays (20 launches per graph, as the engine's
decode runs under CUDA graphs), so Python launch overhead stays out. Consecutive calls read different copies of
the batch (its own blocks each, COLD_BYTES of K/V over all copies), so no call finds the last one's K/V in the
50 MB L2, as a step's attention does not (the layer's GEMMs ran in between). The torch
peer is timed with plain events (its launches are few and long). The default is measured again at the end
("again" rows): the difference is the run-to-run spread.

    python benchmarks/decode_attention.py            # full sweep (~15 variants per case)
    python benchmarks/decode_attention.py --quick    # default plan and config only
    python benchmarks/decode_attention.py --batch 1 --contexts 1024   # batch 1: partitions of 64-256 tokens

Prints the full table, then a short summary table last. Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.switches import parse_variant, switched  # noqa: E402

BATCH, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 64, 32, 8, 128, 16
EXTRA_CONFIGS: tuple[tuple[int, int, int], ...] = ()
EXTRA_SPLITS: tuple[int, ...] = ()  # --splits: partition sizes to force beside the default plan
CONTEXTS = (1024, 4096)
LAUNCHES_PER_GRAPH = 20
# K/V bytes that consecutive calls cycle through: five times an H100's L2. Before session 26 every call read the
# same blocks; at batch 64 and 193 tokens (25 MB of FP8 K/V) they stayed in L2: 13.9 us, 18.4 in the step.
COLD_BYTES = 256 << 20
GIB = 1 << 30
DEVICE = "cuda"


def time_ms(fn, repeats: int = 30, graphed: bool = True) -> float:
    """Median milliseconds of one fn() call, from CUDA-graph replays of LAUNCHES_PER_GRAPH calls
    (graphed=False: events around each plain call, after the same warm-up)."""
    from benchmarks.gpu_timing import capture_calls, event_ms

    if not graphed:
        for _ in range(3):
            fn()
        return statistics.median(event_ms(fn) for _ in range(repeats))
    graph = capture_calls(fn, LAUNCHES_PER_GRAPH)
    return statistics.median(event_ms(graph.replay) / LAUNCHES_PER_GRAPH for _ in range(repeats))


def memory_bandwidths() -> tuple[float, float]:
    """(copy GB/s counting read + write, read-only GB/s of a sum) on 1 GiB tensors of random data."""
    source = torch.randn(GIB // 4, device="cuda")
    target = torch.empty_like(source)
    copy_ms = time_ms(lambda: target.copy_(source))
    rows = source.view(-1, 4096)
    total = torch.empty(4096, device="cuda")
    read_ms = time_ms(lambda: torch.sum(rows, dim=0, out=total))
    return 2 * GIB / copy_ms / 1e6, GIB / read_ms / 1e6


def make_batch(context_len: int, cache_dtype: torch.dtype, generator: torch.Generator):
    """A paged cache holding `copies` batches of BATCH sequences at context_len, each copy on blocks of its own,
    shuffled, filled through reshape_and_cache; block_tables is [copies, BATCH, blocks per sequence], with
    enough copies for COLD_BYTES of K/V."""
    from modelgate.kernels.reshape_and_cache import allocate_kv_cache, reshape_and_cache

    blocks_per_seq = -(-context_len // BLOCK_SIZE)  # the last block partly filled unless BLOCK_SIZE divides it
    copies = -(-COLD_BYTES // kv_bytes(context_len, cache_dtype))
    num_blocks = copies * BATCH * blocks_per_seq + 1
    kv_cache, kv_scales = allocate_kv_cache(num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, cache_dtype, DEVICE)
    chunk = 1 << 16  # tokens written per call, so the bf16 source stays small
    for first in range(0, num_blocks * BLOCK_SIZE, chunk):
        slots = torch.arange(first, min(first + chunk, num_blocks * BLOCK_SIZE), device=DEVICE)
        shape = (len(slots), NUM_KV_HEADS, HEAD_DIM)
        key = torch.randn(shape, device=DEVICE, dtype=torch.bfloat16)
        value = torch.randn(shape, device=DEVICE, dtype=torch.bfloat16)
        reshape_and_cache(key, value, kv_cache, slots, kv_scales)
    order = torch.randperm(num_blocks, generator=generator)[: copies * BATCH * blocks_per_seq]
    block_tables = order.view(copies, BATCH, blocks_per_seq).to(torch.int32).to(DEVICE)
    context_lens = torch.full((BATCH,), context_len, dtype=torch.int32, device=DEVICE)
    q = torch.randn((BATCH, NUM_HEADS, HEAD_DIM), generator=generator).to(DEVICE, torch.bfloat16)
    return q, kv_cache, kv_scales, block_tables, context_lens


def kv_bytes(context_len: int, cache_dtype: torch.dtype) -> int:
    """Bytes of K and V the batch's attention must read (FP8: values and their float32 scales)."""
    per_token_head = HEAD_DIM * cache_dtype.itemsize + (4 if cache_dtype.itemsize == 1 else 0)
    return 2 * BATCH * context_len * NUM_KV_HEADS * per_token_head


def variants(context_len: int, quick: bool):
    """(name, split or None for the default plan, config or None for the default)."""
    from modelgate.kernels.paged_decode_attention import SINGLE_PASS, DecodeSplit, default_decode_config

    yield "default", None, None
    # FP8 tiles loaded as bytes instead of int32 words (kernels/fp8_kv_words.py): the earlier path, for comparison.
    yield "fp8 as bytes", None, default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS)._replace(words=False)
    yield (
        "fp8 words, bf16 dots",
        None,
        default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS)._replace(half_dots=False, ptx_convert=False),
    )
    yield (
        "fp8 words, fp16 dots, no ptx",
        None,
        default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS)._replace(ptx_convert=False),
    )
    for block_n, warps, stages in EXTRA_CONFIGS:  # --configs: tiles to compare with the default at every size
        config = default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS)._replace(
            block_n=block_n, num_warps=warps, num_stages=stages
        )
        yield f"n{block_n} w{warps} s{stages}", None, config
    for size in EXTRA_SPLITS:  # --splits: short contexts cut into more programs than the planner asks for
        if size < context_len:
            split = DecodeSplit(-(-context_len // size), size)
            yield f"split {split.num_partitions}x{size}", split, None
    if quick:
        return
    if BATCH <= 8:  # a few (sequence, KV head) pairs: latency-bound, short partitions of one or two tiles
        for size in (64, 128, 256):
            for block_n, warps, stages in ((64, 4, 1), (64, 4, 2), (64, 2, 1), (32, 4, 1), (32, 2, 1), (64, 8, 1)):
                split = DecodeSplit(-(-context_len // size), size)
                yield (
                    f"split {split.num_partitions}x{size} n{block_n} w{warps} s{stages}",
                    split,
                    default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS)._replace(
                        block_n=block_n, num_warps=warps, num_stages=stages
                    ),
                )
        return
    for size in (512, 1024):
        if size < context_len:
            yield f"split {context_len // size}x{size}", DecodeSplit(context_len // size, size), None
    yield "single pass", SINGLE_PASS, None
    # stages 1: no cp.async staging (FP8 tiles then convert in registers instead of byte-wise from shared memory).
    configs = ((32, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 3), (64, 8, 2), (64, 4, 1))
    if context_len < 1024:  # many short sequences: the grid is full, each program is a few dependent tiles
        configs += ((32, 4, 1), (32, 2, 1), (64, 2, 1), (16, 4, 1), (32, 2, 2))
        # ...or one or two wide tiles: fewer dependent round trips to memory per program
        configs += ((128, 4, 1), (128, 8, 1), (256, 8, 1), (256, 4, 1))
    for block_n, warps, stages in configs:
        config = default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS)._replace(
            block_n=block_n, num_warps=warps, num_stages=stages
        )
        yield f"single n{block_n} w{warps} s{stages}", SINGLE_PASS, config
        if context_len >= 1024:
            yield f"split 512 n{block_n} w{warps} s{stages}", DecodeSplit(context_len // 512, 512), config


def measure_case(context_len, cache_dtype, bandwidths, quick, rows, with_peer=True):
    from modelgate.kernels.paged_decode_attention import (
        default_decode_config,
        num_sms,
        paged_decode_attention,
        paged_decode_attention_reference,
        plan_decode_split,
    )

    generator = torch.Generator().manual_seed(context_len)
    q, kv_cache, kv_scales, block_tables, context_lens = make_batch(context_len, cache_dtype, generator)
    expected = paged_decode_attention_reference(q, kv_cache, block_tables[0], context_lens, kv_scales=kv_scales)
    nbytes = kv_bytes(context_len, cache_dtype)
    dtype_name = "fp8" if cache_dtype.itemsize == 1 else "bf16"
    plan = plan_decode_split(
        BATCH,
        NUM_KV_HEADS,
        context_len,
        default_decode_config(HEAD_DIM, BATCH * NUM_KV_HEADS).block_n,
        num_sms(q.device),
    )
    for name, split, config in variants(context_len, quick):
        if name.startswith("fp8") and dtype_name != "fp8":
            continue
        out = torch.full_like(q, float("nan"))
        turn = itertools.cycle(list(block_tables))  # the first call (checked) reads copy 0

        def call():
            paged_decode_attention(
                q,
                kv_cache,
                next(turn),
                context_lens,
                context_len,
                kv_scales=kv_scales,
                split=split,
                config=config,
                out=out,
            )

        call()
        error = ((out.float() - expected.float()).norm() / expected.float().norm()).item()
        if not error < 1e-2:  # NaN fails too
            raise SystemExit(f"{dtype_name} ctx {context_len} {name}: relative error {error:.3g} vs the reference")
        label = f"{name} ({plan.num_partitions} part)" if split is None else name
        rows.append(_row(dtype_name, context_len, label, time_ms(call), nbytes, bandwidths, error))
    _as_mixed_step(q, kv_cache, kv_scales, block_tables, context_lens, expected, nbytes, bandwidths, rows)
    if with_peer and cache_dtype == torch.bfloat16:
        _torch_peer(q, kv_cache, block_tables, context_lens, context_len, expected, nbytes, bandwidths, rows)


# 16-row tiles (which a decode's 4 query heads fill a quarter of) the mixed step's decodes are timed on beside the
# default and kernels/prefill_attention.py's SHORT_QUERY_CONFIG.
OTHER_SHORT_QUERY_TILES = ((16, 64, 4, 2), (16, 32, 4, 2), (16, 64, 4, 1))


def _as_mixed_step(q, kv_cache, kv_scales, block_tables, context_lens, expected, nbytes, bandwidths, rows):
    """The same decodes through prefill_attention, one query token per sequence, as a step that mixes them with
    prefills attends them (backends/llm/attention/triton_paged.py's decodes_in_mixed_steps off): its default
    tile, its short-query tile, then OTHER_SHORT_QUERY_TILES."""
    from modelgate.kernels.prefill_attention import SHORT_QUERY_CONFIG, PrefillConfig, default_prefill_config

    query_start = torch.arange(BATCH + 1, dtype=torch.int32, device=q.device)
    dtype_name = "fp8" if kv_cache.dtype.itemsize == 1 else "bf16"
    configs = [("", default_prefill_config(q.shape[-1]))]
    tiles = [SHORT_QUERY_CONFIG] + [PrefillConfig(*tile) for tile in OTHER_SHORT_QUERY_TILES]
    configs += [(" m{} n{} w{} s{}".format(*tile), tile) for tile in tiles]
    timing = (q, kv_cache, kv_scales, block_tables, query_start, context_lens, expected, nbytes, bandwidths, rows)
    for suffix, config in configs:
        _time_prefill_kernel(suffix, config, *timing)
        if dtype_name == "fp8" and config in (configs[0][1], SHORT_QUERY_CONFIG):  # and the cache read as words
            with switched(parse_variant("words:modelgate.kernels.prefill_attention.FP8_WORDS=True")):
                _time_prefill_kernel(suffix + " words", config, *timing)


def _time_prefill_kernel(
    suffix, config, q, kv_cache, kv_scales, block_tables, query_start, context_lens, expected, nbytes, bandwidths, rows
):
    """One prefill_attention launch on the decodes (one query token per sequence), checked then timed."""
    from modelgate.kernels.prefill_attention import prefill_attention

    out = torch.full_like(q, float("nan"))
    turn = itertools.cycle(list(block_tables))

    def call():
        prefill_attention(
            q, kv_cache, next(turn), query_start, context_lens, 1, kv_scales=kv_scales, config=config, out=out
        )

    call()
    error = ((out.float() - expected.float()).norm() / expected.float().norm()).item()
    if not error < 1e-2:
        raise SystemExit(f"prefill_attention{suffix} on the decodes: relative error {error:.3g} vs the reference")
    dtype_name = "fp8" if kv_cache.dtype.itemsize == 1 else "bf16"
    label = "prefill kernel (a mixed step's)" + suffix
    rows.append(_row(dtype_name, context_lens[0].item(), label, time_ms(call), nbytes, bandwidths, error))


def _torch_peer(q, kv_cache, block_tables, context_lens, context_len, expected, nbytes, bandwidths, rows):
    from modelgate.backends.llm.attention.torch_paged import TorchPagedAttention

    engine = TorchPagedAttention(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM)

    turn = itertools.cycle(list(block_tables))

    def call():
        return engine._decode_rows(q, kv_cache, next(turn), context_lens, context_len)

    error = ((call().float() - expected.float()).norm() / expected.float().norm()).item()
    rows.append(
        _row(
            "bf16",
            context_len,
            "torch_paged (engine today)",
            time_ms(call, repeats=10, graphed=False),
            nbytes,
            bandwidths,
            error,
        )
    )


def _row(dtype_name, context_len, name, ms, nbytes, bandwidths, error):
    copy_bw, read_bw = bandwidths
    gbps = nbytes / ms / 1e6
    return dict(
        kv=dtype_name,
        ctx=context_len,
        variant=name,
        us=ms * 1e3,
        gbps=gbps,
        vs_copy=gbps / copy_bw,
        vs_read=gbps / read_bw,
        error=error,
    )


def print_table(rows, title):
    print(f"\n{title}")
    header = f"{'kv':<5}{'ctx':>6}  {'variant':<34}{'us':>9}{'GB/s':>9}{'/copy':>8}{'/read':>8}{'rel err':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['kv']:<5}{r['ctx']:>6}  {r['variant']:<34}{r['us']:>9.1f}{r['gbps']:>9.0f}"
            f"{r['vs_copy']:>8.2f}{r['vs_read']:>8.2f}{r['error']:>10.1e}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the default plan and config")
    parser.add_argument("--batch", type=int, default=64, help="sequences (small batches sweep short splits)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument(
        "--configs",
        nargs="*",
        default=[],
        help="tiles to time beside the default plan, as nBLOCK_NwWARPSsSTAGES (n32w2s2)",
    )
    parser.add_argument(
        "--splits",
        type=int,
        nargs="*",
        default=[],
        help="partition sizes (multiples of the default tile) to force beside the default plan, e.g. 64 128",
    )
    args = parser.parse_args()
    extra = []
    for text in args.configs:
        match = re.fullmatch(r"n(\d+)w(\d+)s(\d+)", text)
        if match is None:
            parser.error(f"--configs: {text!r} is not nBLOCK_NwWARPSsSTAGES, e.g. n32w2s2")
        extra.append(tuple(int(g) for g in match.groups()))
    globals().update(  # read by variants
        BATCH=args.batch, CONTEXTS=tuple(args.contexts), EXTRA_CONFIGS=tuple(extra), EXTRA_SPLITS=tuple(args.splits)
    )
    if not torch.cuda.is_available():
        print("decode_attention benchmark: needs a CUDA GPU (none found); nothing measured.")
        return 0
    from modelgate.kernels.reshape_and_cache import FP8_DTYPE

    print(
        f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {__import__('triton').__version__}"
    )
    bandwidths = memory_bandwidths()
    print(f"copy bandwidth (read + write): {bandwidths[0]:.0f} GB/s; read-only (torch.sum): {bandwidths[1]:.0f} GB/s")
    print(
        f"batch {BATCH}, {NUM_HEADS} query heads / {NUM_KV_HEADS} KV heads, head_dim {HEAD_DIM}, block {BLOCK_SIZE}; "
        f"GB/s = K/V bytes (FP8: + scales) / time"
    )
    rows = []
    for context_len in CONTEXTS:
        for cache_dtype in (torch.bfloat16, FP8_DTYPE):
            measure_case(context_len, cache_dtype, bandwidths, args.quick, rows)
            torch.cuda.empty_cache()  # the case's tensors died with its frame
    # The default measured again at the end: the run-to-run spread.
    for context_len in CONTEXTS:
        for cache_dtype in (torch.bfloat16, FP8_DTYPE):
            before = len(rows)
            measure_case(context_len, cache_dtype, bandwidths, True, rows, with_peer=False)
            rows[before]["variant"] += " again"
            torch.cuda.empty_cache()
    print_table(rows, "all variants")
    summary = []
    for context_len in CONTEXTS:
        for kv in ("bf16", "fp8"):
            case = [
                r
                for r in rows
                if r["kv"] == kv
                and r["ctx"] == context_len
                and "torch" not in r["variant"]
                and "prefill" not in r["variant"]
            ]
            summary.append(case[0])
            summary.append(
                dict(
                    max(case, key=lambda r: r["gbps"]), variant="best: " + max(case, key=lambda r: r["gbps"])["variant"]
                )
            )
            summary += [
                r
                for r in rows
                if r["kv"] == kv and r["ctx"] == context_len and ("torch" in r["variant"] or "prefill" in r["variant"])
            ]
    print_table(summary, f"summary (copy {bandwidths[0]:.0f} GB/s, read-only {bandwidths[1]:.0f} GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
