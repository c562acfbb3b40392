"""The engine's own CPU work per step, against the model forward measured in the same run.

On an H100 a decode step of an 8B model at batch 256 takes ~6-8 ms of GPU time; everything else in
`LLMEngine.step()` runs on the CPU and adds to it unless it is well under ~1-2 ms. This script runs the
engine on the CPU with a tiny random Llama checkpoint (the TINY shape of llm_engine_vs_transformers.py,
so the model itself is cheap and the engine's Python work shows), all requests submitted at once
(greedy, ignore_eos, ISL/OSL 128/128 by default), and splits each step's wall time into

  schedule   Scheduler.schedule()
  execute    ModelRunner.execute(), of which
    model      the model forward + compute_logits (a GPU's work on a GPU)
    sampler    Sampler.sample()
    prepare    the rest: building the step's input tensors and metadata
  update     Scheduler.update_from_output()
  outputs    the rest of step(): output processing (detokenization, stop strings, RequestOutput)
  overhead   step - model: the CPU work a GPU step would wait on

Times are medians over the decode steps (one new token for every running request; a median, so that other
processes on a shared machine disturb it less), in ms, and the overhead per request in µs. The pieces are
timed by wrapping the engine's own methods with time.perf_counter. torch runs on one thread by default
(--threads), which keeps the tensor ops' times steady; the engine's own Python work is single-threaded anyway.

    python benchmarks/llm_engine_cpu_overhead.py                      # batch 1, 64, 256
    python benchmarks/llm_engine_cpu_overhead.py --batch-sizes 256 --profile 30   # + cProfile top 30
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_engine_vs_transformers import TINY, build_checkpoint, prompts  # noqa: E402

from modelgate.backends.llm.sampler import PendingSample  # noqa: E402

COLUMNS = ("schedule", "execute", "model", "sampler", "prepare", "update", "outputs", "step", "overhead")


class StepTimer:
    """Wraps the engine's step pieces; one dict of seconds per step, plus whether it was a decode step."""

    def __init__(self, engine):
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[tuple[bool, dict[str, float]]] = []
        self.is_decode = False
        self._restores: list = []  # (owner, name, original) of every wrap, for `close`
        self._wrap(engine.scheduler, "schedule", "schedule", self._note_decode)
        self._wrap(engine.scheduler, "schedule_ahead", "schedule", self._note_decode)
        # The engine launches a step (queues its GPU work and sampling) and reads its tokens later: on the CPU
        # the launch computes everything, so "execute" is the launches plus the waits for the tokens.
        self._wrap(engine.runner, "launch", "execute")
        self._wrap(engine.runner, "launch_ahead", "execute")
        self._wrap(engine.runner.sampler, "sample_async", "sampler")
        # Reading a step's tokens (their dict by request): a class attribute, as each step makes its own.
        self._wrap(PendingSample, "result", "execute")
        self._wrap(engine.runner.model, "forward", "model")  # nn.Module.__call__ looks up self.forward
        self._wrap(engine.runner.model, "compute_logits", "model")
        self._wrap(engine.scheduler, "update_from_output", "update")
        self._wrap(engine, "step", "step", self._close_step)

    def _wrap(self, owner, name: str, column: str, after=None) -> None:
        original = getattr(owner, name)
        self._restores.append((owner, name, original))

        def timed(*args, **kwargs):
            started = time.perf_counter()
            result = original(*args, **kwargs)
            self.current[column] += time.perf_counter() - started
            if after is not None:
                after(result)
            return result

        setattr(owner, name, timed)

    def close(self) -> None:
        """Unwrap everything: PendingSample's class attribute outlives this engine."""
        for owner, name, original in reversed(self._restores):
            setattr(owner, name, original)

    def _note_decode(self, scheduled) -> None:
        if scheduled is None:  # schedule_ahead found no step to launch ahead
            return
        self.is_decode = bool(scheduled.scheduled) and all(s.num_new_tokens == 1 for s in scheduled.scheduled)

    def _close_step(self, outputs) -> None:
        times, self.current = self.current, defaultdict(float)
        times["prepare"] = times["execute"] - times["model"] - times["sampler"]
        times["outputs"] = times["step"] - times["schedule"] - times["execute"] - times["update"]
        times["overhead"] = times["step"] - times["model"]
        self.steps.append((self.is_decode, dict(times)))

    def decode_medians(self) -> tuple[int, dict[str, float]]:
        decode = [times for is_decode, times in self.steps if is_decode]
        if not decode:
            return 0, {c: 0.0 for c in COLUMNS}
        return len(decode), {c: statistics.median(t[c] for t in decode) for c in COLUMNS}


def make_engine(checkpoint: Path, batch_size: int, isl: int, osl: int, block_size: int):
    from modelgate.backends.llm.engine import LLMEngine
    from modelgate.backends.llm.engine_config import EngineConfig

    config = EngineConfig(
        device="cpu",
        max_num_seqs=batch_size,
        max_num_batched_tokens=16384,
        max_model_len=isl + osl + 16,
        block_size=block_size,
        show_progress=False,
        num_kv_blocks=batch_size * ((isl + osl) // block_size + 2),
    )
    return LLMEngine(checkpoint, config)


def run(engine, batch: list[list[int]], osl: int, tag: str) -> float:
    """Submit every request at once and step until all finish; returns the wall seconds."""
    from modelgate.backends.llm.sampling_params import SamplingParams

    sampling = SamplingParams(max_tokens=osl, temperature=0, ignore_eos=True)
    for index, prompt in enumerate(batch):
        engine.add_request(f"{tag}-{index}", prompt, sampling)
    started = time.perf_counter()
    while engine.has_unfinished:
        engine.step()
    return time.perf_counter() - started


def measure(checkpoint: Path, batch_size: int, args, profile_top: int) -> dict:
    engine = make_engine(checkpoint, batch_size, args.isl, args.osl, args.block_size)
    batch = prompts(batch_size, args.isl, TINY["vocab_size"])
    run(engine, batch[:2], 4, "warmup")
    timer = StepTimer(engine)
    profiler = cProfile.Profile() if profile_top else None
    if profiler:
        profiler.enable()
    elapsed = run(engine, batch, args.osl, "run")
    timer.close()
    if profiler:
        profiler.disable()
        print(f"\n--- cProfile, batch {batch_size} (cumulative) ---")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(profile_top)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(profile_top)
    num_steps, medians = timer.decode_medians()
    return {
        "batch": batch_size,
        "decode_steps": num_steps,
        "medians": medians,
        "tokens_per_s": batch_size * args.osl / elapsed,
    }


def print_table(rows: list[dict], args) -> None:
    print(
        f"\nLLMEngine.step() on the CPU ({torch.get_num_threads()} torch threads), tiny random Llama "
        f"(hidden {TINY['hidden_size']}, {TINY['num_hidden_layers']} layers, vocab {TINY['vocab_size']}), "
        f"ISL/OSL {args.isl}/{args.osl}, greedy, ignore_eos, block size {args.block_size}"
    )
    print("median ms per decode step (overhead = step - model: the engine's CPU work; µs/req = overhead / batch)")
    header = f"{'batch':>6}{'steps':>7}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'µs/req':>9}{'tok/s':>9}"
    print(header)
    for row in rows:
        m = row["medians"]
        cells = "".join(f"{m[c] * 1e3:>10.3f}" for c in COLUMNS)
        per_request = m["overhead"] * 1e6 / row["batch"]
        print(f"{row['batch']:>6}{row['decode_steps']:>7}{cells}{per_request:>9.1f}{row['tokens_per_s']:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--isl", type=int, default=128)
    parser.add_argument("--osl", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama-tiny-random"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.checkpoint / "config.json").is_file():
        build_checkpoint(args.checkpoint, TINY, "cpu")
    rows = [measure(args.checkpoint, size, args, args.profile) for size in args.batch_sizes]
    print_table(rows, args)


if __name__ == "__main__":
    main()
