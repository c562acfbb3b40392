"""Tensor parallelism: a Llama-3-70B-shaped FP8 checkpoint (random weights) served with tensor_parallel_size
N against TensorRT-LLM's published 2xH100 figures, and the all-reduce time per step against the bus bandwidth
that torch.distributed's all_reduce reaches on the same GPUs, same run.

TensorRT-LLM publishes Llama-3.3-70B FP8 on 2 H100s at 6,378 output tok/s (ISL/OSL 128/128) and 4,205
(1000/1000). For each --tp N (one subprocess each: a tensor-parallel group per process):
  1. all_reduce timing loop over N ranks (NCCL on GPUs, gloo on --device cpu), CUDA-event timed: bus bandwidth
     (nccl-tests' definition: bytes * 2 (N - 1) / N / time) at a large message, and the time of one all-reduce
     of a decode step's activations ([max_num_seqs, hidden] bf16);
  2. the engine (rank 0 in the subprocess, ranks 1..N-1 its workers), all requests submitted at once, greedy,
     ignore_eos: output tok/s per pattern, TTFT and inter-token latency;
  3. all-reduce per step: (2 * layers + 1) all-reduces of [batch, hidden] (o_proj, down_proj, the embedding)
     at the time step 1 measured, against the median inter-token latency (a decode step).

--layers L builds L of the 80 layers (disk: ~0.85 GB of FP8 per layer, 4.2 GB of bf16 embedding + LM head).
A run of fewer layers is not the 70B model: its tok/s is printed as measured, and beside it scaled by
(L + 2) / (80 + 2) (decode time ~ layers + embedding/LM head), an estimate, labelled so.

    python benchmarks/llm_tensor_parallel.py --tp 2 4 8 --layers 80 --num-requests 1024      # 8 GPUs lent
    python benchmarks/llm_tensor_parallel.py --tp 2 --layers 20 --num-requests 512           # 2 GPUs, less disk
    python benchmarks/llm_tensor_parallel.py --tp 2 --pp 2 --layers 40 --num-requests 512    # 4 GPUs: 2 stages
    python benchmarks/llm_tensor_parallel.py --tiny --device cpu --tp 2 --num-requests 8 \\
        --patterns 16/8                                                                        # CPU smoke (gloo)

--pp P adds pipeline_parallel_size P: each TP size then uses tp x P GPUs (stage s on GPUs s*tp .. s*tp+tp-1); the
all-reduce is still timed over tp ranks (one stage's tensor-parallel group).

The checkpoint is written once to --checkpoint (default /tmp/modelgate-llama3-70b-fp8-L<layers>) and reused:
with the device calls' 10-minute limit, build it in a call of its own (--build-only), then measure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.llm_engine_vs_transformers import (  # noqa: E402
    LLAMA3_8B,
    make_engine,
    pattern_workload,
    percentile,
    run_modelgate,
)

LLAMA3_70B = dict(
    LLAMA3_8B,
    hidden_size=8192,
    intermediate_size=28672,
    num_hidden_layers=80,
    num_attention_heads=64,
    num_key_value_heads=8,
)
TINY = dict(
    LLAMA3_8B, vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2
)
# TensorRT-LLM's published Llama-3.3-70B FP8 throughput on 2 H100s, output tok/s, by ISL/OSL.
TRTLLM_2XH100 = {"128/128": 6378.0, "1000/1000": 4205.0}
WEIGHT_STD = 0.02


def build_fp8_checkpoint(directory: Path, shape: dict, num_layers: int, device: str) -> None:
    """A Llama checkpoint as FP8 checkpoints come (e4m3 projections, per-channel float32 weight_scale, bf16
    embeddings, norms and LM head), written one safetensors file per layer with an index, plus a word-level
    tokenizer. Random weights of std WEIGHT_STD, drawn on `device` (a GPU draws 70B in seconds)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    hidden, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    head_dim = hidden // shape["num_attention_heads"]
    q, kv = hidden, shape["num_key_value_heads"] * head_dim
    projections = {
        "self_attn.q_proj": (q, hidden),
        "self_attn.k_proj": (kv, hidden),
        "self_attn.v_proj": (kv, hidden),
        "self_attn.o_proj": (hidden, q),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }
    weight_map = {}
    generator = torch.Generator(device).manual_seed(0)
    for layer in range(num_layers):
        tensors = {}
        for name, (rows, columns) in projections.items():
            values = torch.randn(rows, columns, device=device, generator=generator).clamp_(-4, 4)
            tensors[f"model.layers.{layer}.{name}.weight"] = values.to(torch.float8_e4m3fn).cpu()
            tensors[f"model.layers.{layer}.{name}.weight_scale"] = torch.full((rows,), WEIGHT_STD)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{layer}.{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        _save(save_file, directory, f"layer-{layer:03d}.safetensors", tensors, weight_map)
    ends = {"model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        values = torch.randn(vocab, hidden, device=device, generator=generator) * WEIGHT_STD
        ends[name] = values.to(torch.bfloat16).cpu()
    _save(save_file, directory, "ends.safetensors", ends, weight_map)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = dict(shape, num_hidden_layers=num_layers, architectures=["LlamaForCausalLM"], model_type="llama")
    config.update(bos_token_id=0, eos_token_id=1, torch_dtype="bfloat16")
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t2"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"bos_token": "t0", "eos_token": "t1"}))


def _save(save_file, directory: Path, file_name: str, tensors: dict, weight_map: dict) -> None:
    save_file(tensors, str(directory / file_name), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(tensors, file_name))


# -- all_reduce timing loop ---------------------------------------------------------------------


def all_reduce_rank(rank: int, world_size: int, port: int, device: str, sizes: list[int], out_path: str) -> None:
    """One rank of the timing loop; rank 0 writes {bytes: median seconds} to out_path."""
    import torch.distributed as dist

    os.environ["NCCL_NVLS_ENABLE"] = "0"  # the device machines require NVLink multicast off
    on_gpu = device == "cuda"
    if on_gpu:
        torch.cuda.set_device(rank)
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=rank == 0)
    dist.init_process_group("nccl" if on_gpu else "gloo", store=store, rank=rank, world_size=world_size)
    target = torch.device("cuda", rank) if on_gpu else torch.device("cpu")
    results = {}
    for num_bytes in sizes:
        tensor = torch.ones(num_bytes // 2, dtype=torch.bfloat16 if on_gpu else torch.float16, device=target)
        for _ in range(5):
            dist.all_reduce(tensor)
        times = []
        for _ in range(20):
            dist.barrier()
            times.append(_timed(lambda: dist.all_reduce(tensor), on_gpu))
        results[num_bytes] = statistics.median(times)
    if rank == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.destroy_process_group()


def _timed(function, on_gpu: bool) -> float:
    if not on_gpu:
        started = time.perf_counter()
        function()
        return time.perf_counter() - started
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    function()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_all_reduce(world_size: int, device: str, sizes: list[int]) -> dict[int, float]:
    """Median seconds of an all_reduce of each size in bytes over world_size ranks (spawned processes)."""
    import multiprocessing
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    context = multiprocessing.get_context("spawn")
    ranks = [
        context.Process(target=all_reduce_rank, args=(rank, world_size, port, device, sizes, out))
        for rank in range(world_size)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join()
    if any(process.exitcode != 0 for process in ranks):
        raise RuntimeError(f"all_reduce timing failed: exit codes {[p.exitcode for p in ranks]}")
    return {int(size): seconds for size, seconds in json.loads(Path(out).read_text()).items()}


def bus_bandwidth(num_bytes: int, seconds: float, world_size: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce, bytes/s: what each link carries, comparable across N."""
    return num_bytes * 2 * (world_size - 1) / world_size / seconds


# -- one tensor-parallel size, in a subprocess ---------------------------------------------------


def run_one(args: argparse.Namespace) -> dict:
    """The engine with tensor_parallel_size args.tp[0] over every pattern (the --child side)."""
    world_size = args.tp[0]
    config = json.loads((args.checkpoint / "config.json").read_text())
    hidden = config["hidden_size"]
    step_bytes = args.max_num_seqs * hidden * 2
    sizes = [step_bytes, 256 << 20] if args.device == "cuda" else [step_bytes, 4 << 20]
    reduce_s = time_all_reduce(world_size, args.device, sizes)
    settings = dict(
        tensor_parallel_size=world_size,
        pipeline_parallel_size=args.pp,
        kv_cache_dtype="fp8" if args.device == "cuda" else "auto",
        max_num_seqs=args.max_num_seqs,
        show_progress=False,
    )
    if args.device == "cpu":
        settings.update(num_kv_blocks=args.cpu_kv_blocks, attention_backend="torch")
    engine = make_engine(args.checkpoint, args.device, settings)
    runs = {}
    for pattern in args.patterns:
        workload = pattern_workload(pattern, args.num_requests, config["vocab_size"])
        result = run_modelgate(engine, workload)
        runs[pattern] = {
            "tokens_per_s": result["tokens_per_s"],
            "ttft_p50": percentile(result["ttft"], 50),
            "itl_p50": percentile(result["itl"], 50) if result["itl"] else float("nan"),
            "preemptions": result["preemptions"],
        }
    engine.workers.stop()
    return {
        "tp": world_size,
        "pp": args.pp,
        "layers": config["num_hidden_layers"],
        "hidden": hidden,
        "step_bytes": step_bytes,
        "all_reduce_s": {str(k): v for k, v in reduce_s.items()},
        "runs": runs,
    }


def print_tables(results: list[dict], args: argparse.Namespace) -> None:
    full_layers = LLAMA3_70B["num_hidden_layers"]
    print(f"\nLlama-3-70B-shaped FP8, random weights, device {args.device}, {args.num_requests} requests per pattern")
    print(
        f"{'TPxPP':>5} {'ISL/OSL':>10} {'layers':>6} {'tok/s':>10} {'est. 80 layers':>15} {'TRT-LLM 2xH100':>15} "
        f"{'ratio':>7} {'TTFT p50 s':>11} {'ITL p50 ms':>11}"
    )
    for result in results:
        layers = result["layers"]
        for pattern, run in result["runs"].items():
            scaled = run["tokens_per_s"] * (layers + 2) / (full_layers + 2)
            peer = TRTLLM_2XH100.get(pattern)
            ratio = f"{scaled / peer:.2f}" if peer else "-"
            print(
                f"{result['tp']}x{result['pp']:<3} {pattern:>10} {layers:>6} {run['tokens_per_s']:>10.0f} {scaled:>15.0f} "
                f"{peer or '-':>15} {ratio:>7} {run['ttft_p50']:>11.3f} {run['itl_p50'] * 1e3:>11.2f}"
            )
    print("\nall-reduce per decode step (o_proj, down_proj per layer + the embedding), torch.distributed all_reduce")
    print(
        f"{'TP':>3} {'bus GB/s (large)':>17} {'msg KiB':>8} {'us/all-reduce':>14} {'bus GB/s (msg)':>15} "
        f"{'us/step':>8} {'ISL/OSL':>10} {'% of ITL':>9}"
    )
    for result in results:
        times = {int(k): v for k, v in result["all_reduce_s"].items()}
        step_bytes, large = result["step_bytes"], max(times)
        count = 2 * result["layers"] + 1
        per_step = count * times[step_bytes]
        for pattern, run in result["runs"].items():
            share = 100 * per_step / run["itl_p50"] if run["itl_p50"] == run["itl_p50"] else float("nan")
            print(
                f"{result['tp']:>3} {bus_bandwidth(large, times[large], result['tp']) / 1e9:>17.1f} "
                f"{step_bytes / 1024:>8.0f} {times[step_bytes] * 1e6:>14.1f} "
                f"{bus_bandwidth(step_bytes, times[step_bytes], result['tp']) / 1e9:>15.2f} {per_step * 1e6:>8.0f} "
                f"{pattern:>10} {share:>8.1f}%"
            )
    print(
        "\nus/step assumes every step is a decode of max_num_seqs sequences at the message size timed above; the"
        "\nTRT-LLM ratio compares the 80-layer estimate with the 2-GPU figure whatever the TP size."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tp", type=int, nargs="+", default=[2])
    parser.add_argument("--pp", type=int, default=1, help="pipeline_parallel_size (stages) for every --tp")
    parser.add_argument("--layers", type=int, default=80, help="layers of the 70B shape to build (80: all)")
    parser.add_argument("--patterns", nargs="+", default=["128/128", "1000/1000"])
    parser.add_argument("--num-requests", type=int, default=1024)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same kind (CPU smoke run)")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--cpu-kv-blocks", type=int, default=512)
    parser.add_argument("--build-only", action="store_true", help="write the checkpoint and stop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    shape = TINY if args.tiny else LLAMA3_70B
    if args.checkpoint is None:
        args.checkpoint = Path(f"/tmp/modelgate-llama3-70b-fp8-{'tiny-' if args.tiny else ''}L{args.layers}")
    if args.child:
        args.json_out.write_text(json.dumps(run_one(args)))
        return
    if not (args.checkpoint / "config.json").is_file():
        started = time.perf_counter()
        build_fp8_checkpoint(args.checkpoint, shape, args.layers, args.device)
        print(f"built {args.checkpoint} ({args.layers} layers) in {time.perf_counter() - started:.0f} s")
    if args.build_only:
        return
    results = []
    for world_size in args.tp:
        out = Path(tempfile.mkdtemp()) / "result.json"
        child = [sys.executable, __file__, *(argv or sys.argv[1:]), "--child", "--json-out", str(out)]
        child += ["--tp", str(world_size), "--checkpoint", str(args.checkpoint)]
        subprocess.run(child, check=True)
        results.append(json.loads(out.read_text()))
    print_tables(results, args)


if __name__ == "__main__":
    main()
