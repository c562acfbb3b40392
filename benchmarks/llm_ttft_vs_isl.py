"""TTFT against input length at low load (the talk's slope plot), served, against the prefill compute floor.

`modelgate serve` hosts the checkpoint (FP8 weights and KV, prefix caching off); for each ISL, `modelgate bench
llm` sends a few requests one at a time (concurrency 1, random-token prompts, 2 output tokens) over
generate_stream: the TTFT a user sees on an idle server. In the same call, this process measures the GPU's
dense FP8 matmul rate (torch._scaled_mm on a large square problem, the best case of the tensor cores) and
computes each ISL's prefill floor: the prefill's FLOPs (2 per weight per token for the linear layers, plus
causal attention: 2 * 2 * layers * heads * head_dim * ISL^2 / 2) at that rate. The table prints TTFT p50, the
floor and their ratio (issue 18: TTFT(1k) <= 1.3x the floor), and writes a PNG of TTFT against ISL.

The "server + wire" column is the client's TTFT less the engine process's (the request trace's): the HTTP
request, the tokenizing, the hand-offs to and from the engine process and the first token's way back. With
`--tiny` (tiny_llm on the CPU, no floor) that column is what a run measures: the server's share of TTFT.

    python benchmarks/llm_ttft_vs_isl.py --out /tmp/ttft          # the 8B checkpoint, on a GPU
    python benchmarks/llm_ttft_vs_isl.py --tiny --isls 128 1024 --out /tmp/ttft-tiny   # this VM
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_served_vs_engine import Run, Server, add_engine_parameter_option, bench, write_repository  # noqa: E402
from llm_server_cpu_split import checkpoint_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def fp8_matmul_flops_per_s(size: int = 8192, repeats: int = 20) -> float:
    """Dense FP8 e4m3 GEMM rate (FLOP/s) of torch._scaled_mm at size x size x size, CUDA-event timed, best of
    `repeats` after a warm-up."""
    import torch

    a = torch.randn(size, size, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(size, size, device="cuda").to(torch.float8_e4m3fn).t()  # column-major, as _scaled_mm wants
    scale = torch.ones((), device="cuda")
    for _ in range(3):
        torch._scaled_mm(a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch._scaled_mm(a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * size**3 / best


def prefill_flops(config: dict, isl: int) -> float:
    """FLOPs of one prefill of `isl` tokens: linear layers (2 per weight per token, lm_head for the last token
    only, as the engine computes logits) and causal attention (QK^T and PV, half the square)."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    per_layer = (
        hidden * (heads + 2 * kv_heads) * head_dim
        + heads * head_dim * hidden
        + 3 * hidden * config["intermediate_size"]
    )
    linear = 2 * layers * per_layer * isl + 2 * hidden * config["vocab_size"]
    attention = 2 * 2 * layers * heads * head_dim * isl * isl / 2
    return linear + attention


def traced_ttft_p50(trace: Path, isl: int, field: str = "ttft_s") -> float:
    """Median `field` (ttft_s: in the LLM backend; engine_ttft_s: in its engine process) of the traced requests
    of `isl` input tokens (NaN when none was traced)."""
    lines = trace.read_text().splitlines() if trace.is_file() else []
    ttfts = sorted(r[field] for r in map(json.loads, lines) if r["isl"] == isl and r.get(field) is not None)
    return ttfts[len(ttfts) // 2] if ttfts else float("nan")


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    isls = [row["isl"] for row in rows]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(isls, [row["ttft_ms"] for row in rows], "o-", label="served TTFT p50")
    axes.plot(isls, [row["floor_ms"] for row in rows], "s--", label="prefill compute floor (FP8)")
    axes.set_xlabel("input tokens")
    axes.set_ylabel("ms")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    parser.add_argument("--isls", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096, 8190])
    parser.add_argument("--requests", type=int, default=8, help="requests per ISL, one at a time")
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=Path("/tmp/llm-ttft-vs-isl"))
    parser.add_argument(
        "--send-token-ids", action="store_true", help="prompts as token ids: the TTFT without the server's tokenizing"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny_llm on the CPU: the server's share, no floor")
    add_engine_parameter_option(parser)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.checkpoint = checkpoint_for(max(args.isls) + 64, args.out / "checkpoint")
    elif not (args.checkpoint / "config.json").is_file():
        build = [sys.executable, "benchmarks/llm_engine_vs_transformers.py", "--build-only"]
        subprocess.run([*build, "--checkpoint", str(args.checkpoint)], check=True, cwd=ROOT)
    config = json.loads((args.checkpoint / "config.json").read_text())
    rate = None
    if not args.tiny:
        rate = fp8_matmul_flops_per_s()
        print(f"FP8 matmul (torch._scaled_mm 8192^3): {rate / 1e12:.0f} TFLOP/s", flush=True)
    serving = argparse.Namespace(
        tiny=args.tiny,
        max_num_seqs=8,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=max(args.isls) + 64,
        # The model's request trace (backends/llm/trace_recorder.py): TTFT from the request's arrival at the LLM
        # backend to its first token handed to the stream, which splits the client's TTFT into server and wire.
        engine_parameter=[f"trace_file={(args.out / 'trace.jsonl').resolve()}", *args.engine_parameter],
    )
    write_repository(args.out / "repository", args.checkpoint, serving)
    server = Server(args.out / "repository", args.out / "server.log")
    rows = []
    try:
        server.wait_ready(timeout_s=600)
        for isl in args.isls:
            try:
                run = Run("generate_stream", isl, 2, 1, args.requests)
                summary = bench(server, run, args.checkpoint, args.out, send_token_ids=args.send_token_ids)
            except RuntimeError as exc:  # e.g. an ISL past the model's context: the others still count
                print(f"ISL {isl}: {exc}", flush=True)
                continue
            floor_ms = float("nan") if rate is None else prefill_flops(config, isl) / rate * 1e3
            ttft_ms = summary["ttft_s"]["p50"] * 1e3
            backend_ms = traced_ttft_p50(args.out / "trace.jsonl", isl) * 1e3
            engine_ms = traced_ttft_p50(args.out / "trace.jsonl", isl, "engine_ttft_s") * 1e3
            rows.append({"isl": isl, "ttft_ms": ttft_ms, "floor_ms": floor_ms, "server_ms": ttft_ms - engine_ms})
            print(
                f"ISL {isl}: TTFT p50 {ttft_ms:.2f} ms (in the LLM backend {backend_ms:.2f}, in its "
                f"engine process {engine_ms:.2f}), floor {floor_ms:.1f} ms",
                flush=True,
            )
    finally:
        server.stop()
        time.sleep(1)
    print(
        "\n| ISL | TTFT p50 ms | server + wire ms | prefill floor ms | TTFT / floor |\n| --- | --- | --- | --- | --- |"
    )
    for row in rows:
        ratio = row["ttft_ms"] / row["floor_ms"]
        print(f"| {row['isl']} | {row['ttft_ms']:.2f} | {row['server_ms']:.2f} | {row['floor_ms']:.1f} | {ratio:.2f} |")
    if rate is not None:
        plot(rows, args.out / "ttft_vs_isl.png")


if __name__ == "__main__":
    main()
