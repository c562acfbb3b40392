"""The engine's decode step against its floor, Llama-3-8B-shaped random model, on one CUDA GPU, same run.

A decode step must read every weight once (all but the embedding rows it does not look up) and the KV of
every sequence's context. Its floor is those bytes / the read-only memory bandwidth measured in the same run
(torch sum over 1 GiB, as benchmarks/decode_attention.py measures it). For each setting (bf16; FP8 weights
+ FP8 KV) and batch size (1 and 64 by default), every sequence at context --context:
  - graph step: one decode step replayed from its CUDA graph (model + logits), CUDA-event timed, median;
  - engine step: LLMEngine.step() during steady decoding (scheduler, graph replay, sampler, output
    processing), wall time, median;
  - floor and the ratios step / floor.

    python benchmarks/llm_decode_step.py                      # bf16 and fp8, batch 1 and 64, context 1024
    python benchmarks/llm_decode_step.py --settings fp8 --batches 1 --context 128
    python benchmarks/llm_decode_step.py --settings fp8 --batches 1 --profile   # + kernels of one graph step

--compare-ahead also measures each setting with launch_decode_ahead off (engine.step() then reads each step's
tokens back before it launches the next; the graph step is the same).

--variant LABEL[:module.attribute=value,...] [...] measures each setting once per variant, with those engine
switches set (benchmarks/switches.py), each on an engine of its own, in this one run:

    python benchmarks/llm_decode_step.py --settings fp8 --batches 64 --variant base \
        pdl:modelgate.kernels.fp8_gemm_tma.PDL_PREFETCH_BYTES=1024

--temperature T [T ...] samples the engine-step rows with each temperature (default 0: greedy); T > 0 draws
unseeded with top_p 0.95 (the sampler's device path, launched ahead like greedy), its rows labelled "tT".
`--temperature 0 0.8` compares greedy and sampled engine steps against the same floor, in one run:

    python benchmarks/llm_decode_step.py --settings bf16 --temperature 0 0.8

--profile adds, per setting and batch, the kernels of one graph replay (torch.profiler over TIMED_STEPS
replays): calls per step, microseconds per step, and the step time no kernel was running (launch gaps); and
the host and device operations of ten engine.step() calls (what the engine adds to the replay).

The checkpoint is the one benchmarks/llm_engine_vs_transformers.py builds (built here when missing).
Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.decode_attention import memory_bandwidths  # noqa: E402
from benchmarks.llm_engine_vs_transformers import LLAMA3_8B, SETTINGS, build_checkpoint, prompts  # noqa: E402
from benchmarks.switches import parse_variant, switched  # noqa: E402

TIMED_STEPS = 30


def step_floor_bytes(engine, batch: int, context: int) -> int:
    """Bytes one decode step of `batch` sequences at `context` tokens must read."""
    model = engine.runner.model
    weights = sum(t.numel() * t.element_size() for name, t in model.named_parameters() if "embed_tokens" not in name)
    if model.config.tie_word_embeddings:
        weights += model.embed_tokens.weight.numel() * model.embed_tokens.weight.element_size()
    embedding_rows = batch * model.config.hidden_size * model.embed_tokens.weight.element_size()
    kv_per_token = engine.runner.kv_bytes_per_block // engine.runner.block_size
    return weights + embedding_rows + batch * context * kv_per_token


def print_kernel_profile(graph, graph_ms: float) -> None:
    """Kernels of one replay of `graph`, grouped by name, longest first; and the time between kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(TIMED_STEPS):
            graph.replay()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, list[float]] = {}
    for event in kernels:
        by_name.setdefault(event.name, []).append(event.device_time)
    busy_us = sum(sum(times) for times in by_name.values()) / TIMED_STEPS
    print(
        f"  kernels of one graph step ({len(kernels) / TIMED_STEPS:.0f} launches, {busy_us:.0f} us busy of "
        f"{graph_ms * 1e3:.0f} us: {graph_ms * 1e3 - busy_us:.0f} us between kernels)"
    )
    print(f"  {'calls':>6}{'us/step':>9}{'us/call':>9}  kernel")
    for name, times in sorted(by_name.items(), key=lambda item: -sum(item[1])):
        print(
            f"  {len(times) / TIMED_STEPS:>6.0f}{sum(times) / TIMED_STEPS:>9.1f}{statistics.median(times):>9.2f}"
            f"  {name[:90]}"
        )


def print_engine_step_profile(engine, steps: int = 10) -> None:
    """Host and device activity of `steps` engine.step() calls: where the time outside the graph replay goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    print(f"  engine.step() x {steps}, by host time (ms are totals over the {steps} steps)")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))


def decode_sampling(temperature: float):
    """The measured requests' SamplingParams: greedy at temperature 0, else an unseeded draw with top_p 0.95."""
    from modelgate.backends.llm.sampling_params import SamplingParams

    top_p = 0.95 if temperature > 0 else 1.0
    return SamplingParams(max_tokens=TIMED_STEPS + 20, temperature=temperature, top_p=top_p, ignore_eos=True)


def measure(engine, batch: int, context: int, vocab: int, profile: bool = False, temperature: float = 0.0) -> dict:
    """Fill `batch` sequences to `context` tokens, then time decode steps (engine and graph replay)."""
    sampling = decode_sampling(temperature)
    ids = [f"b{batch}-{i}-{time.monotonic_ns()}" for i in range(batch)]
    for request_id, prompt in zip(ids, prompts(batch, context, vocab)):
        engine.add_request(request_id, prompt, sampling)
    while any(r.num_output_tokens == 0 for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()  # prefill
    for _ in range(3):
        engine.step()  # first decodes, outside the timing
    step_ms = []
    for _ in range(TIMED_STEPS):
        started = time.perf_counter()
        engine.step()
        step_ms.append((time.perf_counter() - started) * 1e3)
    if profile:
        print_engine_step_profile(engine)
    graphs = engine.runner.decode_graphs
    graph_ms = None
    if graphs is not None and graphs.supports(batch):
        graph = graphs._graphs[graphs.padded_size(batch)]  # inputs of the last step are still staged
        times = []
        for _ in range(TIMED_STEPS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        graph_ms = statistics.median(times)
        if profile:
            print_kernel_profile(graph, graph_ms)
    for request_id in ids:
        engine.abort(request_id)
    return {
        "engine_ms": statistics.median(step_ms),
        "graph_ms": graph_ms,
        "bytes": step_floor_bytes(engine, batch, context + 3 + TIMED_STEPS),
    }


def measure_setting(args, setting: str, name: str, read_bw: float) -> list[tuple]:
    """The rows of one engine (a setting under one variant's switches): (label, batch, result, floor ms)."""
    from modelgate.backends.llm.engine import LLMEngine
    from modelgate.backends.llm.engine_config import EngineConfig

    engine = LLMEngine(
        args.checkpoint,
        EngineConfig(
            device="cuda",
            max_num_seqs=max(args.batches),
            max_model_len=args.context + TIMED_STEPS + 64,
            max_num_batched_tokens=16384,
            enable_prefix_caching=False,
            show_progress=False,
            **SETTINGS[setting],
        ),
    )
    rows = []
    for ahead, temperature in itertools.product((True, False) if args.compare_ahead else (True,), args.temperature):
        engine.config = engine.config.model_copy(update={"launch_decode_ahead": ahead})
        label = (name if ahead else f"{name} wait") + (f" t{temperature:g}" if temperature > 0 else "")
        for batch in args.batches:
            result = measure(engine, batch, args.context, LLAMA3_8B["vocab_size"], args.profile, temperature)
            floor_ms = result["bytes"] / (read_bw * 1e9) * 1e3
            rows.append((label, batch, result, floor_ms))
            print(
                f"{label} batch {batch}: engine step {result['engine_ms']:.2f} ms, graph step "
                f"{result['graph_ms']:.2f} ms, floor {floor_ms:.2f} ms ({result['bytes'] / 1e9:.2f} GB)",
                flush=True,
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["bf16", "fp8"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--profile", action="store_true", help="print the kernels of one graph step")
    parser.add_argument(
        "--compare-ahead", action="store_true", help="also measure engine steps with launch_decode_ahead off"
    )
    parser.add_argument(
        "--temperature",
        nargs="+",
        type=float,
        default=[0.0],
        help="engine-step rows sampled at each temperature (0: greedy; > 0: unseeded, top_p 0.95)",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        type=parse_variant,
        default=[parse_variant("base")],
        help="engine switches per run, LABEL[:module.attribute=value,...] (benchmarks/switches.py): each variant "
        "builds its own engine, in this process",
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    if not (args.checkpoint / "config.json").is_file():
        build_checkpoint(args.checkpoint, LLAMA3_8B, "cuda")
    copy_bw, read_bw = memory_bandwidths()
    print(f"copy bandwidth (read + write) {copy_bw:.0f} GB/s, read-only {read_bw:.0f} GB/s", flush=True)
    rows = []
    for setting, variant in itertools.product(args.settings, args.variant):
        name = setting if len(args.variant) == 1 else f"{setting} {variant.label}"
        with switched(variant):
            rows += measure_setting(args, setting, name, read_bw)
        gc.collect()  # the engine holds reference cycles (graphs <-> runner)
        torch.cuda.empty_cache()
    print(f"\nLlama-3-8B-shaped, context {args.context}, {torch.cuda.get_device_name()}, read-only {read_bw:.0f} GB/s")
    width = max([10] + [len(label) + 1 for label, *_ in rows])  # 10 unless a label needs more ("bf16 wait t0.8")
    print(
        f"{'setting':<{width}}{'batch':>6}{'GB read':>9}{'floor ms':>10}{'graph ms':>10}{'engine ms':>11}"
        f"{'graph/floor':>13}{'engine/floor':>14}"
    )
    for setting, batch, r, floor_ms in rows:
        graph = r["graph_ms"] or float("nan")
        print(
            f"{setting:<{width}}{batch:>6}{r['bytes'] / 1e9:>9.2f}{floor_ms:>10.2f}{graph:>10.2f}{r['engine_ms']:>11.2f}"
            f"{graph / floor_ms:>13.2f}{r['engine_ms'] / floor_ms:>14.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
