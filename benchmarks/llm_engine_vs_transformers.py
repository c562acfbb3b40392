"""Our LLM engine against Hugging Face transformers `generate`, same random-weight model, same run.

Builds a Llama-3-8B-shaped checkpoint with random bf16 weights (or a tiny one with --tiny
for a CPU smoke run), saves it with transformers' save_pretrained, then:
  1. transformers: the saved model, `generate` on all prompts as one batch (greedy);
  2. modelgate: our engine loading the same checkpoint through its own loader, all
     requests submitted at once, stepping until done (greedy, ignore_eos).
Prints output tokens/s of both and their ratio, and our TTFT / inter-token latency p50/p99.

    python benchmarks/llm_engine_vs_transformers.py --num-requests 256 --isl 128 --osl 128
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                 rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
TINY = dict(LLAMA3_8B, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)


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


def run_transformers(directory: Path, batch: list[list[int]], osl: int, device: str) -> float:
    """Output tokens/s of one batched greedy generate."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to(device).eval()
    input_ids = torch.tensor(batch, device=device)
    with torch.inference_mode():
        model.generate(input_ids[:2, :8], max_new_tokens=2, do_sample=False)  # warm-up
        _sync(device)
        started = time.perf_counter()
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=osl,
                             min_new_tokens=osl, do_sample=False)
        _sync(device)
        elapsed = time.perf_counter() - started
    generated = (out.shape[1] - input_ids.shape[1]) * out.shape[0]
    del model
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    return generated / elapsed


def run_modelgate(directory: Path, batch: list[list[int]], osl: int, device: str, engine_settings: dict) -> dict:
    from backends.llm.engine import LLMEngine
    from backends.llm.engine_config import EngineConfig
    from backends.llm.sampling_params import SamplingParams

    engine = LLMEngine(directory, EngineConfig(device=device, **engine_settings))
    sampling = SamplingParams(max_tokens=osl, temperature=0, ignore_eos=True)
    _drive(engine, [[5, 6, 7, 8]] * 4, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))  # warm-up
    started = time.perf_counter()
    token_times = _drive(engine, batch, sampling)
    elapsed = time.perf_counter() - started
    total = sum(len(times) for times in token_times.values())
    ttft = [times[0] - started for times in token_times.values()]
    itl = [b - a for times in token_times.values() for a, b in zip(times, times[1:])]
    return {"tokens_per_s": total / elapsed, "elapsed_s": elapsed, "ttft": ttft, "itl": itl,
            "kv_blocks": engine.runner.num_kv_blocks, "preemptions": engine.scheduler.num_preemptions}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--isl", type=int, default=128)
    parser.add_argument("--osl", type=int, default=128)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a CPU smoke run")
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="only write the random checkpoint")
    parser.add_argument("--attention-backend", choices=["auto", "torch", "triton"], default="auto")
    parser.add_argument("--quantization", choices=["none", "fp8"], default="none")
    parser.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny else LLAMA3_8B
    if not (args.checkpoint / "config.json").is_file():
        started = time.perf_counter()
        build_checkpoint(args.checkpoint, shape, device)
        print(f"built random checkpoint in {time.perf_counter() - started:.1f} s", flush=True)
    if args.build_only:
        return
    batch = prompts(args.num_requests, args.isl, shape["vocab_size"])
    settings = dict(max_num_seqs=args.num_requests, max_num_batched_tokens=args.max_num_batched_tokens,
                    max_model_len=args.isl + args.osl + 16, show_progress=False,
                    attention_backend=args.attention_backend, quantization=args.quantization,
                    kv_cache_dtype=args.kv_cache_dtype)
    if device == "cpu":
        settings["num_kv_blocks"] = args.num_requests * ((args.isl + args.osl) // 16 + 2)
    ours = run_modelgate(args.checkpoint, batch, args.osl, device, settings)
    print(f"modelgate ({args.attention_backend} attention, weights {args.quantization}, KV {args.kv_cache_dtype}): "
          f"{ours['tokens_per_s']:.0f} output tok/s in {ours['elapsed_s']:.2f} s "
          f"(kv blocks {ours['kv_blocks']}, preemptions {ours['preemptions']})", flush=True)
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    theirs = None if args.skip_transformers else run_transformers(args.checkpoint, batch, args.osl, device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\nISL/OSL {args.isl}/{args.osl}, {args.num_requests} requests, {'tiny' if args.tiny else 'Llama-3-8B-shaped'}"
          f" random bf16 weights, greedy, on {name}")
    print(f"{'system':<28}{'output tok/s':>14}{'ratio':>8}")
    print(f"{'modelgate engine':<28}{ours['tokens_per_s']:>14.0f}{'':>8}")
    if theirs:
        print(f"{'transformers generate':<28}{theirs:>14.0f}{ours['tokens_per_s'] / theirs:>8.2f}")
    print(f"modelgate TTFT p50 {percentile(ours['ttft'], 50) * 1e3:.1f} ms, p99 {percentile(ours['ttft'], 99) * 1e3:.1f} ms;"
          f" inter-token latency p50 {percentile(ours['itl'], 50) * 1e3:.2f} ms, p99 {percentile(ours['itl'], 99) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
