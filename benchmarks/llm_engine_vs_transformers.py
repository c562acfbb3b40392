"""Our LLM engine against Hugging Face transformers `generate`, same random-weight model, same run.

Builds a Llama-3-8B-shaped checkpoint with random bf16 weights (or a tiny one with --tiny
for a CPU smoke run), saves it with transformers' save_pretrained, then for each ISL/OSL pattern:
  1. modelgate, for each setting (bf16, or FP8 weights + FP8 KV): our engine loading the same checkpoint
     through its own loader, all requests submitted at once, stepping until done (greedy, ignore_eos);
  2. transformers: the saved model, batched greedy `generate`.
Prints output tokens/s, the ratio to transformers, and our TTFT / inter-token latency.

    python benchmarks/llm_engine_vs_transformers.py --num-requests 1000 --patterns 128/128 1000/1000 2048/128 \
        --settings bf16 fp8 --transformers-requests 256

transformers runs each pattern's prompts in batches as large as 40 GB of bf16 KV allows (at most 256): its
tok/s is over the requests it ran (--transformers-requests, default all).

Prompts are random token ids, nothing shared between them, unless --prefix-len N: then every prompt begins
with the same N ids (a shared system prompt; the engine's prefix cache can reuse it). --prompts-file replays the
requests `modelgate bench llm --save-prompts` wrote (token ids with BOS, and OSL per line) as one pattern in
place of --patterns; the checkpoint's vocabulary must hold their ids (build it with the same vocab_size):

    modelgate bench llm ... --tokenizer /tmp/modelgate-llama3-8b-random --save-prompts sent.jsonl
    python benchmarks/llm_engine_vs_transformers.py --prompts-file sent.jsonl --settings bf16 fp8
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The requests of a run; other benchmarks take them from here too.
from benchmarks.engine_workloads import Workload, file_workload, pattern_workload, prompts  # noqa: E402, F401

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)
DEFAULT_NUM_REQUESTS = 256
# The engine settings each --settings name stands for.
SETTINGS = {"bf16": {}, "fp8": {"quantization": "fp8", "kv_cache_dtype": "fp8"}}
TINY = dict(
    LLAMA3_8B,
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def build_checkpoint(directory: Path, shape: dict, device: str) -> None:
    """Random weights (std 0.02, as initializer_range) saved as safetensors with a word-level tokenizer."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = transformers.LlamaConfig(**shape, bos_token_id=0, eos_token_id=1, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    vocab = {f"t{i}": i for i in range(shape["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t2"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"bos_token": "t0", "eos_token": "t1"}))
    del model
    gc.collect()


def run_transformers(directory: Path, workload: Workload, device: str) -> float:
    """Output tokens/s of batched greedy generate: requests of one (ISL, OSL) in batches as large as
    transformers_batch_size allows, one batch after another (generate takes one length per batch)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to(device).eval()
    generated, elapsed = 0, 0.0
    with torch.inference_mode():
        warmup = torch.tensor([workload.prompts[0][:8]] * 2, device=device)
        model.generate(warmup, max_new_tokens=2, do_sample=False)
        for (isl, osl), group in _same_lengths(workload).items():
            batch_size = transformers_batch_size(isl, osl)
            for first in range(0, len(group), batch_size):
                input_ids = torch.tensor(group[first : first + batch_size], device=device)
                _sync(device)
                started = time.perf_counter()
                out = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=osl,
                    min_new_tokens=osl,
                    do_sample=False,
                )
                _sync(device)
                elapsed += time.perf_counter() - started
                generated += (out.shape[1] - input_ids.shape[1]) * out.shape[0]
                del out
    del model
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    return generated / elapsed


def _same_lengths(workload: Workload) -> dict[tuple[int, int], list[list[int]]]:
    groups: dict[tuple[int, int], list[list[int]]] = defaultdict(list)
    for prompt, osl in zip(workload.prompts, workload.osls):
        groups[(len(prompt), osl)].append(prompt)
    return groups


def make_engine(directory: Path, device: str, engine_settings: dict):
    from modelgate.backends.llm.engine import LLMEngine
    from modelgate.backends.llm.engine_config import EngineConfig

    engine = LLMEngine(directory, EngineConfig(device=device, **engine_settings))
    _drive(engine, Workload("warm-up", [[5, 6, 7, 8]] * 4, [4] * 4))
    return engine


def run_modelgate(engine, workload: Workload, sampling: dict | None = None) -> dict:
    """All requests submitted at once, stepped to the end (greedy, ignore_eos, then the `sampling` fields):
    tokens/s, TTFT and ITL."""
    preemptions = engine.scheduler.num_preemptions
    steps_before = engine.step_counts.copy()
    started = time.perf_counter()
    token_times = _drive(engine, workload, sampling)
    elapsed = time.perf_counter() - started
    total = sum(len(times) for times in token_times.values())
    ttft = [times[0] - started for times in token_times.values()]
    itl = [b - a for times in token_times.values() for a, b in zip(times, times[1:])]
    return {
        "output_tokens": total,
        "tokens_per_s": total / elapsed,
        "elapsed_s": elapsed,
        "ttft": ttft,
        "itl": itl,
        "kv_blocks": engine.runner.num_kv_blocks,
        "preemptions": engine.scheduler.num_preemptions - preemptions,
        "steps": engine.step_counts.since(steps_before),
    }


def _drive(engine, workload: Workload, sampling: dict | None = None) -> dict[str, list[float]]:
    """Submit all requests at once (greedy, ignore_eos, then the `sampling` fields: SamplingParams') and step
    to the end; the time of each request's tokens."""
    from modelgate.backends.llm.sampling_params import SamplingParams

    ids = [f"req{i}-{time.monotonic_ns()}" for i in range(len(workload.prompts))]
    for request_id, prompt, osl in zip(ids, workload.prompts, workload.osls):
        fields = {"max_tokens": osl, "temperature": 0, "ignore_eos": True, **(sampling or {})}
        engine.add_request(request_id, prompt, SamplingParams(**fields))
    times: dict[str, list[float]] = {i: [] for i in ids}
    while engine.has_unfinished:
        outputs = engine.step()
        now = time.perf_counter()
        for output in outputs:
            times[output.request_id].extend([now] * len(output.new_token_ids))
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def transformers_batch_size(isl: int, osl: int, kv_budget_bytes: float = 40e9, prefill_tokens: int = 65536) -> int:
    """The largest batch (at most 256) whose bf16 KV of the 8B shape (128 KiB per token) fits kv_budget_bytes
    and whose one-shot prefill stays within prefill_tokens (140 x 2048 tokens ran out of memory on the H100)."""
    by_kv = int(kv_budget_bytes // ((isl + osl) * 131072))
    return max(1, min(256, by_kv, prefill_tokens // isl))


def vocab_size(checkpoint: Path, shape: dict) -> int:
    """The vocabulary of the checkpoint on disk, else of the shape about to be built."""
    config = checkpoint / "config.json"
    return json.loads(config.read_text())["vocab_size"] if config.is_file() else shape["vocab_size"]


def workloads(args: argparse.Namespace, vocab: int) -> list[Workload]:
    """The prompts file's requests as one pattern, or --num-requests random prompts per --patterns pair."""
    if args.prompts_file is not None:
        if args.patterns or args.prefix_len:
            raise ValueError("--prompts-file brings its own prompts and lengths: drop --patterns and --prefix-len")
        return [file_workload(path, vocab, args.num_requests) for path in args.prompts_file]
    num_requests = args.num_requests or DEFAULT_NUM_REQUESTS
    return [pattern_workload(p, num_requests, vocab, args.prefix_len) for p in args.patterns or ["128/128"]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--num-requests",
        type=int,
        help=f"requests per pattern (default {DEFAULT_NUM_REQUESTS}); with --prompts-file, its first N (default all)",
    )
    parser.add_argument("--patterns", nargs="+", help="ISL/OSL pairs, e.g. 128/128 1000/1000 (default 128/128)")
    parser.add_argument(
        "--prefix-len",
        type=int,
        default=0,
        help="the first N ids of every prompt are the same (a shared system prompt); N must be below every ISL",
    )
    parser.add_argument(
        "--prompts-file",
        type=Path,
        nargs="+",
        help="replay `modelgate bench llm --save-prompts` JSONL files (token ids and OSL per line), each as one "
        "pattern named by its file",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=sorted(SETTINGS),
        default=["bf16"],
        help="bf16: bf16 weights and KV; fp8: FP8 weights and FP8 KV",
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a CPU smoke run")
    parser.add_argument("--max-num-seqs", type=int, default=512)
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--attention-backend", choices=["auto", "torch", "triton"], default="auto")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    parser.add_argument("--cuda-graph-max-num-tokens", type=int, help="piecewise step graphs (0: eager)")
    parser.add_argument("--gpu-memory-utilization", type=float, help="the engine's share of free GPU memory")
    parser.add_argument("--transformers-requests", type=int, help="requests transformers runs (default all)")
    parser.add_argument(
        "--sampling",
        type=json.loads,
        metavar="JSON",
        help="SamplingParams fields for every request over greedy, e.g. '{\"logprobs\": 1}', '{\"min_tokens\": 128}'",
    )
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-modelgate", action="store_true", help="transformers only")
    parser.add_argument("--build-only", action="store_true", help="only write the random checkpoint")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny else LLAMA3_8B
    try:  # before a checkpoint build that can take minutes
        loads = [] if args.build_only else workloads(args, vocab_size(args.checkpoint, shape))
    except ValueError as exc:  # a prefix as long as an ISL, an unreadable or out-of-vocabulary prompts file
        parser.error(str(exc))
    if not (args.checkpoint / "config.json").is_file():
        started = time.perf_counter()
        build_checkpoint(args.checkpoint, shape, device)
        print(f"built random checkpoint in {time.perf_counter() - started:.1f} s", flush=True)
    if args.build_only:
        return
    ours = {} if args.skip_modelgate else run_all_modelgate(args, device, loads)
    theirs = {} if args.skip_transformers else run_all_transformers(args, device, loads)
    print_table(args, device, loads, ours, theirs)


def run_all_modelgate(args: argparse.Namespace, device: str, loads: list[Workload]) -> dict[tuple, dict]:
    """Each setting's engine over every workload: results by (setting, label)."""
    longest = max(load.longest for load in loads)
    results: dict[tuple, dict] = {}
    for setting in args.settings:
        engine_settings = dict(
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=longest + 16,
            show_progress=False,
            enforce_eager=args.enforce_eager,
            cuda_graph_max_batch_size=args.max_num_seqs,
            cuda_graph_max_num_tokens=args.cuda_graph_max_num_tokens,
            attention_backend=args.attention_backend,
            **SETTINGS[setting],
        )
        if args.gpu_memory_utilization is not None:
            engine_settings["gpu_memory_utilization"] = args.gpu_memory_utilization
        if device == "cpu":
            engine_settings["num_kv_blocks"] = max(len(load.prompts) for load in loads) * (longest // 16 + 2)
        engine = make_engine(args.checkpoint, device, engine_settings)
        for load in loads:
            result = results[(setting, load.label)] = run_modelgate(engine, load, args.sampling)
            print(
                f"modelgate {setting} {load.label}: {result['tokens_per_s']:.0f} output tok/s in "
                f"{result['elapsed_s']:.2f} s ({result['output_tokens']} tokens, kv blocks {result['kv_blocks']}, "
                f"preemptions {result['preemptions']}; {result['steps']})",
                flush=True,
            )
        del engine
        gc.collect()
        torch.cuda.empty_cache() if device == "cuda" else None
    return results


def run_all_transformers(args: argparse.Namespace, device: str, loads: list[Workload]) -> dict[str, float]:
    """transformers' output tok/s per workload label, over its first --transformers-requests requests."""
    theirs: dict[str, float] = {}
    for load in loads:
        part = load.head(args.transformers_requests or len(load.prompts))
        theirs[load.label] = run_transformers(args.checkpoint, part, device)
        sizes = "/".join(str(transformers_batch_size(isl, osl)) for isl, osl in _same_lengths(part))
        print(
            f"transformers {load.label}: {theirs[load.label]:.0f} output tok/s ({len(part.prompts)} requests in "
            f"batches of {sizes})",
            flush=True,
        )
    return theirs


def print_table(args: argparse.Namespace, device: str, loads: list[Workload], ours: dict, theirs: dict) -> None:
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    counts = "/".join(sorted({str(len(load.prompts)) for load in loads}))
    prefix = f", shared prefix of {args.prefix_len}" if args.prefix_len else ""
    source = f" from {', '.join(map(str, args.prompts_file))}" if args.prompts_file else " per pattern"
    print(
        f"\n{counts} requests{source}{prefix}, {'tiny' if args.tiny else 'Llama-3-8B-shaped'} random "
        f"weights, greedy, ignore_eos, on {name}"
    )
    width = max(11, *(len(load.label) + 2 for load in loads))
    print(
        f"{'ISL/OSL':<{width}}{'system':<24}{'output tok/s':>14}{'vs HF':>8}{'TTFT p50 ms':>13}{'ITL p50 ms':>12}"
        f"{'ITL p99 ms':>12}"
    )
    for load in loads:
        hf = theirs.get(load.label)
        for setting in [s for s in args.settings if (s, load.label) in ours]:
            r = ours[(setting, load.label)]
            ratio = f"{r['tokens_per_s'] / hf:>8.2f}" if hf else f"{'':>8}"
            print(
                f"{load.label:<{width}}{f'modelgate {setting}':<24}{r['tokens_per_s']:>14.0f}{ratio}"
                f"{percentile(r['ttft'], 50) * 1e3:>13.1f}{percentile(r['itl'], 50) * 1e3:>12.2f}"
                f"{percentile(r['itl'], 99) * 1e3:>12.2f}"
            )
        if hf:
            print(f"{load.label:<{width}}{'transformers bf16':<24}{hf:>14.0f}{1.0:>8.2f}")


if __name__ == "__main__":
    main()
