"""Where an idle engine's time to first token goes: engine.step() calls from one request's arrival to its first
token, each step's wall time, and the top kernels and launch count of its prefill step (torch.profiler).

TTFT through the server at concurrency 1 (benchmarks/llm_ttft_vs_isl.py) minus this is what serving adds.

    python benchmarks/llm_ttft_breakdown.py --isls 128 1024 --settings fp8
    python benchmarks/llm_ttft_breakdown.py --isls 1024 --variant base \
        fused:modelgate.backends.llm.layers.fp8_linear.Fp8Linear.silu_in_gemm=True   # an A/B, one engine each
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_engine_vs_transformers import SETTINGS, make_engine, prompts  # noqa: E402
from switches import parse_variant, switched  # noqa: E402


class CollectionTimer:
    """Garbage collections while steps are timed: how many and how long (gc.callbacks)."""

    def __init__(self):
        self.count, self.seconds, self._started = 0, 0.0, 0.0
        gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._started


# torch's caching allocator, counted over the timed requests: a retry frees every cached block (which synchronizes
# the device) before allocating again, and each cudaMalloc/cudaFree of a new segment costs host time in the step.
_ALLOCATOR = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_sync_all_streams")


def first_token_steps(engine, prompt: list[int]) -> tuple[float, list[float]]:
    """(seconds from add_request to the step that returned the first token, each step's wall seconds)."""
    from modelgate.backends.llm.sampling_params import SamplingParams

    request_id = f"ttft-{time.monotonic_ns()}"
    started = time.perf_counter()
    engine.add_request(request_id, prompt, SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    steps = []
    first = None
    while engine.has_unfinished:
        before = time.perf_counter()
        outputs = engine.step()
        steps.append(time.perf_counter() - before)
        if first is None and any(o.request_id == request_id and o.new_token_ids for o in outputs):
            first = time.perf_counter() - started
    return first, steps


def profile_prefill(engine, prompt: list[int]) -> None:
    """The first step of one request (its prefill), under torch.profiler: top CUDA kernels and the launch count."""
    from torch.profiler import ProfilerActivity, profile

    from modelgate.backends.llm.sampling_params import SamplingParams

    engine.add_request(f"profiled-{time.monotonic_ns()}", prompt, SamplingParams(max_tokens=2, temperature=0))
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiled:
        engine.step()
        torch.cuda.synchronize()
    while engine.has_unfinished:
        engine.step()
    events = profiled.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    print(f"  prefill step: {launches} kernel launches, {gpu_us / 1e3:.2f} ms of kernels")
    print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    parser.add_argument("--isls", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="fp8")
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-gc-freeze", action="store_true", help="leave start-up objects to the collector")
    parser.add_argument(
        "--cuda-graph-max-num-tokens",
        type=int,
        default=None,
        help="prefills of up to this many tokens replay piecewise graphs (0: eager; default: the engine's, 1024)",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        type=parse_variant,
        default=[parse_variant("base")],
        help="engine switches, LABEL[:module.attribute=value,...] (benchmarks/switches.py): an engine each",
    )
    args = parser.parse_args()
    engine_settings = dict(
        max_num_seqs=8,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=max(args.isls) + 16,
        show_progress=False,
        enable_prefix_caching=False,
        cuda_graph_max_num_tokens=args.cuda_graph_max_num_tokens,
        **SETTINGS[args.settings],
    )
    for variant in args.variant:
        if len(args.variant) > 1:
            print(f"== variant {variant.label}", flush=True)
        with switched(variant):
            breakdown(args, engine_settings)
        gc.unfreeze()  # the engine's objects too: the next variant's engine needs its memory
        gc.collect()  # the engine holds reference cycles (graphs <-> runner)
        torch.cuda.empty_cache()


def breakdown(args, engine_settings: dict) -> None:
    """Build an engine and print each ISL's first-token steps and its prefill's kernels."""
    engine = make_engine(args.checkpoint, "cuda", engine_settings)
    if not args.no_gc_freeze:
        # As the engine process does after start-up: otherwise a full collection walks every object of the model and
        # its kernels whenever allocations trigger one, tens of milliseconds inside whichever step it lands in.
        gc.collect()
        gc.freeze()
    collections = CollectionTimer()
    vocab = json.loads((args.checkpoint / "config.json").read_text())["vocab_size"]
    for isl in args.isls:
        batch = prompts(args.repeats + 1, isl, vocab)
        first_token_steps(engine, batch[0])  # warm-up of this length
        allocator_before = torch.cuda.memory_stats()
        results = [first_token_steps(engine, prompt) for prompt in batch[1:]]
        allocator = {key: torch.cuda.memory_stats().get(key, 0) - allocator_before.get(key, 0) for key in _ALLOCATOR}
        ttfts = sorted(first for first, _ in results)
        steps = results[len(results) // 2][1]
        print(
            f"ISL {isl}: engine TTFT p50 {ttfts[len(ttfts) // 2] * 1e3:.1f} ms; steps of the median request: "
            + ", ".join(f"{s * 1e3:.1f}" for s in steps)
            + f" ms; {collections.count} garbage collections so far, {collections.seconds * 1e3:.1f} ms",
            flush=True,
        )
        print("  CUDA allocator over the timed requests: " + ", ".join(f"{k} {v}" for k, v in allocator.items()))
        profile_prefill(engine, prompts(1, isl, vocab)[0])


if __name__ == "__main__":
    main()
