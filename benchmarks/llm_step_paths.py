"""Where an engine run's time goes, by step path: decode graphs, piecewise step graphs, eager steps.

One ISL/OSL pattern, all requests submitted at once, run `--rounds` times on the same engine with fresh random
prompts each round and prefix caching off (a repeated prompt would find its KV cached and skip its prefill).
Each setting of `--cuda-graph-max-num-tokens` runs in a process of its own (a freed engine does not always give
its GPU memory back to the next one). Per round: output tok/s and the Triton kernels compiled during it; per
path: steps, mean tokens, the host time its launches took and the GPU time from the step's first kernel to its
last (CUDA events; nothing synchronizes between steps, so launch-ahead still works).

    python benchmarks/llm_step_paths.py --checkpoint /tmp/modelgate-llama3-8b-random --settings 0 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.llm_engine_vs_transformers import SETTINGS, Workload, _drive  # noqa: E402


class StepRecorder:
    """Wraps a ModelRunner's forward_step and launch_ahead: each call's path, tokens, host time and events."""

    def __init__(self, runner):
        self.runner = runner
        self.records: list[tuple[str, int, float, object, object]] = []
        forward_step, launch_ahead = runner.forward_step, runner.launch_ahead

        def timed_forward(scheduled):
            return self._timed(
                self.path_of(scheduled), sum(item.num_new_tokens for item in scheduled), forward_step, scheduled
            )

        def timed_ahead(output, previous, pending):
            return self._timed("decode graphs (ahead)", len(output.scheduled), launch_ahead, output, previous, pending)

        runner.forward_step, runner.launch_ahead = timed_forward, timed_ahead

    def path_of(self, scheduled) -> str:
        from modelgate.backends.llm.step_layout import is_decode_step

        runner, num_tokens = self.runner, sum(item.num_new_tokens for item in scheduled)
        graphs = runner.decode_graphs
        if graphs is not None and graphs.supports(len(scheduled)) and is_decode_step(scheduled):
            return "decode graphs"
        if runner.step_graphs is not None and runner.step_graphs.supports(num_tokens):
            return f"step graphs <= {runner.step_graphs.padded_count(num_tokens)}"
        return "eager"

    def _timed(self, path: str, num_tokens: int, call, *args):
        on_gpu = self.runner.device.type == "cuda"
        start, end = (
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if on_gpu else (None, None)
        )
        started = time.perf_counter()
        start and start.record()
        result = call(*args)
        end and end.record()
        self.records.append((path, num_tokens, time.perf_counter() - started, start, end))
        return result

    def summary(self) -> dict[str, dict]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        paths: dict[str, dict] = defaultdict(lambda: {"steps": 0, "tokens": 0, "host_s": 0.0, "gpu_s": 0.0})
        for path, num_tokens, host_s, start, end in self.records:
            entry = paths[path]
            entry["steps"] += 1
            entry["tokens"] += num_tokens
            entry["host_s"] += host_s
            entry["gpu_s"] += start.elapsed_time(end) / 1e3 if start is not None else host_s
        self.records.clear()
        return dict(paths)


class CompileLog:
    """Triton kernels compiled (in-memory cache misses) since the last take()."""

    def __init__(self):
        self.names: list[str] = []
        try:
            from triton import knobs
        except ImportError:  # a CPU machine without triton
            return

        def on_miss(*, fn, **_):
            self.names.append(fn.name)
            return None  # compile as usual

        knobs.runtime.jit_cache_hook = on_miss

    def take(self) -> list[str]:
        names, self.names = self.names, []
        return names


def random_workload(pattern: str, num_requests: int, vocab: int, seed: int) -> Workload:
    isl, osl = (int(n) for n in pattern.split("/"))
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randint(3, vocab, (num_requests, isl), generator=generator)
    return Workload(pattern, batch.tolist(), [osl] * num_requests)


def run_setting(args: argparse.Namespace, graph_tokens: int) -> dict:
    """In this process: one engine, `rounds` runs of the pattern; returns what the parent prints."""
    from modelgate.backends.llm.engine import LLMEngine
    from modelgate.backends.llm.engine_config import EngineConfig

    compiles = CompileLog()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU: a smoke run of this script
    isl, osl = (int(n) for n in args.pattern.split("/"))
    started = time.perf_counter()
    engine = LLMEngine(
        args.checkpoint,
        EngineConfig(
            device=device,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=isl + osl + 16,
            show_progress=False,
            enable_prefix_caching=False,
            cuda_graph_max_batch_size=args.max_num_seqs,
            cuda_graph_max_num_tokens=graph_tokens,
            **(SETTINGS["fp8"] if device == "cuda" else {"num_kv_blocks": 4096}),
        ),
    )
    load = {"load_s": time.perf_counter() - started, "compiled": len(compiles.take())}
    recorder = StepRecorder(engine.runner)
    vocab = engine.model_config.vocab_size
    rounds = []
    for number in range(args.rounds):
        workload = random_workload(args.pattern, args.num_requests, vocab, seed=100 + number)
        begun = time.perf_counter()
        times = _drive(engine, workload)
        elapsed = time.perf_counter() - begun
        tokens = sum(len(t) for t in times.values())
        compiled = compiles.take()
        rounds.append(
            {"tok_s": tokens / elapsed, "elapsed_s": elapsed, "compiled": compiled, "paths": recorder.summary()}
        )
    return {"graph_tokens": graph_tokens, "load": load, "rounds": rounds}


def print_report(results: list[dict]) -> None:
    base = results[0]
    print(f"\n{'setting':<22}{'round':>6}{'tok/s':>10}{'vs first setting':>18}  compiled during the round")
    for result in results:
        for number, round_ in enumerate(result["rounds"]):
            ratio = round_["tok_s"] / base["rounds"][number]["tok_s"]
            names = sorted(set(round_["compiled"]))
            print(
                f"graph tokens {result['graph_tokens']:<9}{number:>6}{round_['tok_s']:>10.0f}{ratio:>17.2f}x  "
                f"{len(round_['compiled'])} {names}"
            )
    print(f"\n{'setting':<20}{'round':>6}  {'path':<26}{'steps':>7}{'mean tok':>10}{'host ms':>10}{'GPU ms':>9}")
    for result in results:
        for number, round_ in enumerate(result["rounds"]):
            for path, entry in sorted(round_["paths"].items()):
                steps = entry["steps"]
                print(
                    f"graph tokens {result['graph_tokens']:<7}{number:>6}  {path:<26}{steps:>7}"
                    f"{entry['tokens'] / steps:>10.0f}{entry['host_s'] / steps * 1e3:>10.2f}"
                    f"{entry['gpu_s'] / steps * 1e3:>9.2f}"
                )
    for result in results:
        print(
            f"graph tokens {result['graph_tokens']}: load {result['load']['load_s']:.1f} s, "
            f"{result['load']['compiled']} kernels compiled at load"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    parser.add_argument("--pattern", default="128/128")
    parser.add_argument("--num-requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", type=int, nargs="+", default=[0, 1024], help="cuda_graph_max_num_tokens values")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: run this setting, print JSON
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(run_setting(args, args.one)), flush=True)
        return
    results = []
    for setting in args.settings:
        child = [sys.executable, __file__, *sys.argv[1:], "--one", str(setting)]
        done = subprocess.run(child, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(f"setting {setting} failed ({done.returncode}):\n{done.stderr[-3000:]}", flush=True)
            continue
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    if results:
        print_report(results)


if __name__ == "__main__":
    main()
