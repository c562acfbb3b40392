"""Where one prefill step's GPU time goes: the top kernels of a profiled engine step, per setting.

Builds the engine on the Llama-3-8B-shaped checkpoint (benchmarks/llm_engine_vs_transformers.py builds it),
submits --num-requests prompts of --isl tokens and profiles the first step (a prefill of up to
--max-num-batched-tokens tokens) with torch.profiler, after one unprofiled warm-up step of the same size.
Prints the step's wall time and the kernels that took the most CUDA time.

    python benchmarks/llm_prefill_profile.py --settings bf16 fp8
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llm_engine_vs_transformers import LLAMA3_8B, SETTINGS, build_checkpoint, prompts  # noqa: E402


def profile_step(engine, batch, osl: int, top: int) -> None:
    from modelgate.backends.llm.sampling_params import SamplingParams

    sampling = SamplingParams(max_tokens=osl, temperature=0, ignore_eos=True)
    for i, prompt in enumerate(batch):
        engine.add_request(f"p{i}-{time.monotonic_ns()}", prompt, sampling)
    engine.step()  # warm-up: the same step shape, compiled and allocated
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        engine.step()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    print(f"step wall time {elapsed * 1e3:.1f} ms")
    print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=60))
    while engine.has_unfinished:
        engine.step()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["bf16", "fp8"])
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--isl", type=int, default=128)
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    from modelgate.backends.llm.engine import LLMEngine
    from modelgate.backends.llm.engine_config import EngineConfig

    if not (args.checkpoint / "config.json").is_file():
        build_checkpoint(args.checkpoint, LLAMA3_8B, "cuda")
    for setting in args.settings:
        engine = LLMEngine(
            args.checkpoint,
            EngineConfig(
                device="cuda",
                max_num_seqs=args.num_requests,
                max_num_batched_tokens=args.max_num_batched_tokens,
                max_model_len=args.isl + 32,
                enable_prefix_caching=False,
                show_progress=False,
                **SETTINGS[setting],
            ),
        )
        print(
            f"\n== {setting}: {args.num_requests} x {args.isl} prompt tokens, "
            f"{args.max_num_batched_tokens} tokens per step"
        )
        profile_step(engine, prompts(args.num_requests, args.isl, LLAMA3_8B["vocab_size"]), 2, args.top)
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
