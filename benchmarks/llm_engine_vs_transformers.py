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
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def prompts(num_requests: int, isl: int, vocab: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab, (num_requests, isl), generator=generator).tolist()


def run_transformers(directory: Path, batch: list[list[int]], osl: int, device: str, batch_size: int) -> float:
    """Output tokens/s of batched greedy generate: the prompts in batches of batch_size, one after another."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to(device).eval()
    generated, elapsed = 0, 0.0
    with torch.inference_mode():
        model.generate(torch.tensor(batch[:2], device=device)[:, :8], max_new_tokens=2, do_sample=False)  # warm-up
        for first in range(0, len(batch), batch_size):
            input_ids = torch.tensor(batch[first : first + batch_size], device=device)
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


def make_engine(directory: Path, device: str, engine_settings: dict):
    from modelgate.backends.llm.engine import LLMEngine
    from modelgate.backends.llm.engine_config import EngineConfig
    from modelgate.backends.llm.sampling_params import SamplingParams

    engine = LLMEngine(directory, EngineConfig(device=device, **engine_settings))
    _drive(engine, [[5, 6, 7, 8]] * 4, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))  # warm-up
    return engine


def run_modelgate(engine, batch: list[list[int]], osl: int) -> dict:
    """All requests submitted at once, stepped to the end (greedy, ignore_eos): tokens/s, TTFT and ITL."""
    from modelgate.backends.llm.sampling_params import SamplingParams

    sampling = SamplingParams(max_tokens=osl, temperature=0, ignore_eos=True)
    preemptions = engine.scheduler.num_preemptions
    started = time.perf_counter()
    token_times = _drive(engine, batch, sampling)
    elapsed = time.perf_counter() - started
    total = sum(len(times) for times in token_times.values())
    ttft = [times[0] - started for times in token_times.values()]
    itl = [b - a for times in token_times.values() for a, b in zip(times, times[1:])]
    return {
        "tokens_per_s": total / elapsed,
        "elapsed_s": elapsed,
        "ttft": ttft,
        "itl": itl,
        "kv_blocks": engine.runner.num_kv_blocks,
        "preemptions": engine.scheduler.num_preemptions - preemptions,
    }


def _drive(engine, batch, sampling) -> dict[str, list[float]]:
    """Submit all requests at once and step to the end; the time of each request's tokens."""
    ids = [f"req{i}-{time.monotonic_ns()}" for i in range(len(batch))]
    for request_id, prompt in zip(ids, batch):
        engine.add_request(request_id, prompt, sampling)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--patterns", nargs="+", default=["128/128"], help="ISL/OSL pairs, e.g. 128/128 1000/1000")
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
    parser.add_argument(
        "--transformers-requests",
        type=int,
        default=None,
        help="how many of the requests transformers runs (default all); its tok/s is over those",
    )
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-modelgate", action="store_true", help="transformers only")
    parser.add_argument("--build-only", action="store_true", help="only write the random checkpoint")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny else LLAMA3_8B
    if not (args.checkpoint / "config.json").is_file():
        started = time.perf_counter()
        build_checkpoint(args.checkpoint, shape, device)
        print(f"built random checkpoint in {time.perf_counter() - started:.1f} s", flush=True)
    if args.build_only:
        return
    patterns = [tuple(int(n) for n in p.split("/")) for p in args.patterns]
    longest = max(isl + osl for isl, osl in patterns)
    results: dict[tuple, dict] = {}
    for setting in [] if args.skip_modelgate else args.settings:
        engine_settings = dict(
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=longest + 16,
            show_progress=False,
            enforce_eager=args.enforce_eager,
            cuda_graph_max_batch_size=args.max_num_seqs,
            attention_backend=args.attention_backend,
            **SETTINGS[setting],
        )
        if device == "cpu":
            engine_settings["num_kv_blocks"] = args.num_requests * (longest // 16 + 2)
        engine = make_engine(args.checkpoint, device, engine_settings)
        for isl, osl in patterns:
            ours = run_modelgate(engine, prompts(args.num_requests, isl, shape["vocab_size"]), osl)
            results[(setting, isl, osl)] = ours
            print(
                f"modelgate {setting} {isl}/{osl}: {ours['tokens_per_s']:.0f} output tok/s in {ours['elapsed_s']:.2f} s"
                f" (kv blocks {ours['kv_blocks']}, preemptions {ours['preemptions']})",
                flush=True,
            )
        del engine
        gc.collect()
        torch.cuda.empty_cache() if device == "cuda" else None
    theirs: dict[tuple, float] = {}
    if not args.skip_transformers:
        for isl, osl in patterns:
            count = args.transformers_requests or args.num_requests
            batch_size = transformers_batch_size(isl, osl)
            theirs[(isl, osl)] = run_transformers(
                args.checkpoint, prompts(count, isl, shape["vocab_size"]), osl, device, batch_size
            )
            print(
                f"transformers {isl}/{osl}: {theirs[(isl, osl)]:.0f} output tok/s ({count} requests in batches "
                f"of {batch_size})",
                flush=True,
            )
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"\n{args.num_requests} requests per pattern, {'tiny' if args.tiny else 'Llama-3-8B-shaped'} random "
        f"weights, greedy, ignore_eos, on {name}"
    )
    print(
        f"{'ISL/OSL':<11}{'system':<24}{'output tok/s':>14}{'vs HF':>8}{'TTFT p50 ms':>13}{'ITL p50 ms':>12}"
        f"{'ITL p99 ms':>12}"
    )
    for isl, osl in patterns:
        hf = theirs.get((isl, osl))
        for setting in [s for s in args.settings if (s, isl, osl) in results]:
            r = results[(setting, isl, osl)]
            ratio = f"{r['tokens_per_s'] / hf:>8.2f}" if hf else f"{'':>8}"
            print(
                f"{f'{isl}/{osl}':<11}{f'modelgate {setting}':<24}{r['tokens_per_s']:>14.0f}{ratio}"
                f"{percentile(r['ttft'], 50) * 1e3:>13.1f}{percentile(r['itl'], 50) * 1e3:>12.2f}"
                f"{percentile(r['itl'], 99) * 1e3:>12.2f}"
            )
        if hf:
            print(f"{f'{isl}/{osl}':<11}{'transformers bf16':<24}{hf:>14.0f}{1.0:>8.2f}")


if __name__ == "__main__":
    main()
