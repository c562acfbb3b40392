"""LLM serving as users meet it, against the engine alone on the same requests and TensorRT-LLM's H100 tables.

1. `modelgate serve` hosts the checkpoint (FP8 weights and KV, prefix caching off); `modelgate bench llm`
   loads it once per run (protocol, ISL/OSL, concurrency) with random-token prompts that share no prefix
   (trtllm-bench's synthetic prompts) and saves the prompts it sent. The server process's CPU (every thread,
   not the engine's process) is read around each run: µs of server CPU per output token.
2. The server stops and `benchmarks/llm_engine_vs_transformers.py` runs the engine alone, in a process of its
   own, on the saved prompts of the generate_stream runs (max_num_seqs = the served concurrency, so the engine
   keeps as many requests in flight as the clients did).
3. A table: served tok/s, the engine's, their ratio, TensorRT-LLM's published figure and the ratio to it,
   TTFT / ITL / TPOT p50, and server CPU per token.

    python benchmarks/llm_served_vs_engine.py --out /tmp/served            # the 8B checkpoint, on a GPU
    python benchmarks/llm_served_vs_engine.py --tiny --out /tmp/served     # tiny_llm on the CPU: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.served_metrics import (  # noqa: E402
    SERVER_LATENCIES,
    ms_cell,
    server_latency_means,
    server_latency_sums,
    step_cells,
)

TINY_LLM = ROOT / "model_repository" / "tiny_llm" / "1"
# TensorRT-LLM's published H100 FP8 output tok/s for Llama-3.1-8B (the figures issue 18 quotes)
TENSORRT_LLM_H100 = {"128/128": 28312, "1000/1000": 15220, "2048/128": 3450}


@dataclass(frozen=True)
class Run:
    protocol: str
    isl: int
    osl: int
    concurrency: int | None  # closed loop; None: Poisson arrivals at `rate`
    num_requests: int
    rate: float | None = None  # requests per second

    @property
    def pattern(self) -> str:
        return f"{self.isl}/{self.osl}"

    @property
    def load(self) -> str:
        return f"c{self.concurrency}" if self.concurrency is not None else f"r{self.rate:g}"

    @property
    def name(self) -> str:
        return f"{self.protocol}-{self.isl}-{self.osl}-{self.load}"

    def load_arguments(self) -> list[str]:
        if self.concurrency is not None:
            return ["--concurrency", str(self.concurrency)]
        return ["--request-rate", str(self.rate)]

    @property
    def warmup_requests(self) -> int:
        """Requests sent before the measured ones: as many as the concurrency (up to a quarter of the run, or 16
        where that is more), so that batches and mixed steps of the measured load's sizes have run once (kernels a
        shape needs that the engine's warm-up missed compile then, not while measured); 16 for a Poisson rate."""
        if self.concurrency is None:
            return 16
        return min(self.concurrency, max(16, self.num_requests // 4))


def parse_run(text: str) -> Run:
    """protocol:ISL/OSL:LOAD:requests, LOAD a concurrency (256) or a Poisson rate (r20: 20 requests/s),
    e.g. generate_stream:128/128:256:1000 or generate_stream:1000/1000:r20:600."""
    protocol, lengths, load, num_requests = text.split(":")
    isl, osl = lengths.split("/")
    if load.startswith("r"):
        return Run(protocol, int(isl), int(osl), None, int(num_requests), float(load[1:]))
    return Run(protocol, int(isl), int(osl), int(load), int(num_requests))


GPU_RUNS = [
    "generate_stream:128/128:256:1000",
    "generate_stream:1000/1000:256:256",
    "generate_stream:2048/128:256:512",
    "openai-completions:128/128:256:1000",
    "grpc:128/128:256:1000",
    "generate_stream:128/128:1:32",
]
TINY_RUNS = ["generate_stream:32/32:8:32", "grpc:32/32:8:32", "openai-completions:32/32:8:32"]


# The served model's share of the GPU (its config's gpu_memory_utilization), and the engine alone's.
GPU_MEMORY_UTILIZATION = 0.85


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_repository(folder: Path, checkpoint: Path, args: argparse.Namespace) -> None:
    model = folder / "llm"
    model.mkdir(parents=True)
    (model / "1").symlink_to(checkpoint.resolve())
    settings = {
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "max_model_len": args.max_model_len,
        "enable_prefix_caching": "false",
        "show_progress": "false",
    }
    if args.tiny:
        settings.update(num_kv_blocks=2048, block_size=16)
    else:
        settings.update(quantization="fp8", kv_cache_dtype="fp8", gpu_memory_utilization=GPU_MEMORY_UTILIZATION)
    settings.update(parameter.split("=", 1) for parameter in args.engine_parameter)
    parameters = "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in settings.items())
    kind = "KIND_CPU" if args.tiny else "KIND_GPU"
    (model / "config.pbtxt").write_text(
        f'name: "llm"\nbackend: "llm"\ninstance_group [ {{ count: 1 kind: {kind} }} ]\n{parameters}'
    )


def add_engine_parameter_option(parser: argparse.ArgumentParser) -> None:
    """--engine-parameter KEY=VALUE, repeatable: config parameters of the served model (write_repository)."""

    def key_value(text: str) -> str:
        if "=" not in text:
            raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
        return text

    parser.add_argument(
        "--engine-parameter",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="a config parameter of the served model, e.g. cudnn_prefill_attention=true (repeatable)",
    )


class Server:
    """`modelgate serve` on free ports, serving `model` from `repository`."""

    def __init__(self, repository: Path, log: Path, model: str = "llm", extra_args: tuple[str, ...] = ()):
        self.model = model
        self.log = log
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(repository)]
        command += ["--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        self.process = subprocess.Popen(
            [*command, *extra_args], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT
        )

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"the server exited with status {self.process.returncode}; its log ends:\n{tail}")
            try:
                if requests.get(f"http://127.0.0.1:{self.http}/v2/models/{self.model}/ready", timeout=5).ok:
                    print(*(f"server: {line}\n" for line in self.load_report()), sep="", end="", flush=True)
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise TimeoutError(f"the model was not ready within {timeout_s:.0f} s")

    def load_report(self) -> list[str]:
        """What the engine logged of its load (warm-up times, CUDA graphs captured, the KV cache), without the
        logging prefix; none on the CPU, where the engine does not warm up or capture."""
        return re.findall(r" INFO [\w.]+: ((?:warmed up|captured|KV cache: ).*)", self.log.read_text(errors="replace"))

    def frontend_pids(self) -> list[int]:
        """The server's process and its HTTP workers (--http-workers), whose pids the server logs."""
        return [self.process.pid, *map(int, re.findall(r"HTTP worker \d+ serving, pid (\d+)", self.log.read_text()))]

    def url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc if protocol == 'grpc' else self.http}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def bench(
    server: Server,
    run: Run,
    tokenizer: Path,
    out: Path,
    profile_s: float = 0.0,
    client_processes: int = 1,
    send_token_ids: bool = False,
) -> dict:
    """One `bench llm` run; its summary plus the server's CPU seconds over it. With `profile_s`, py-spy records
    the server (GIL holders, every thread) for that long, from a few seconds in."""
    folder = out / run.name
    command = [sys.executable, "-m", "modelgate", "bench", "llm", "--url", server.url(run.protocol), "-m", "llm"]
    command += ["--protocol", run.protocol, "--tokenizer", str(tokenizer), "--prompt-source", "random-tokens"]
    command += ["--isl", str(run.isl), "--osl", str(run.osl), *run.load_arguments()]
    command += ["--num-requests", str(run.num_requests), "--warmup-requests", str(run.warmup_requests)]
    command += ["--extra-body", '{"ignore_eos": true}', "--no-progress", "--no-plots", "--output-dir", str(folder)]
    command += ["--save-prompts", str(out / f"{run.name}.jsonl"), *(["--send-token-ids"] if send_token_ids else [])]
    command += ["--client-processes", str(min(client_processes, run.concurrency or run.num_requests, run.num_requests))]
    pids = server.frontend_pids()
    cpu_before = sum(map(process_cpu_seconds, pids))
    latencies_before = server_latency_sums(server.metrics)
    bench_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    profiler = _profile(server, run, profile_s, out) if profile_s else None
    output, _ = bench_process.communicate()
    cpu_s = sum(map(process_cpu_seconds, pids)) - cpu_before
    if profiler is not None:
        profiler.wait()
    (out / f"{run.name}.txt").write_text(output)
    if bench_process.returncode != 0:
        raise RuntimeError(f"bench {run.name} failed:\n{output}")
    summary = json.loads((folder / "bench.json").read_text())["summary"]
    summary["server_cpu_s"] = cpu_s
    time.sleep(1.0)  # HTTP workers report their metrics to the server every 0.5 s
    summary["server_means_s"] = server_latency_means(latencies_before, server_latency_sums(server.metrics))
    return summary


def _profile(server: Server, run: Run, seconds: float, out: Path) -> subprocess.Popen | None:
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: no profile", flush=True)
        return None
    time.sleep(3)  # past the warm-up requests
    command = ["py-spy", "record", "-p", str(server.process.pid), "-d", str(int(seconds)), "-r", "200"]
    command += ["--nonblocking", "--gil", "--threads", "-f", "raw", "-o", str(out / f"profile-{run.name}.txt")]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def engine_alone(checkpoint: Path, prompt_files: list[Path], concurrency: int, args: argparse.Namespace) -> dict:
    """Output tok/s of the engine alone per prompts file (labelled by file name)."""
    command = [sys.executable, "benchmarks/llm_engine_vs_transformers.py", "--checkpoint", str(checkpoint)]
    command += ["--prompts-file", *map(str, prompt_files), "--skip-transformers"]
    command += ["--max-num-seqs", str(concurrency), "--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    # The same share of the GPU as the served model, so that both get about the same KV cache.
    command += (
        ["--tiny"] if args.tiny else ["--settings", "fp8", "--gpu-memory-utilization", str(GPU_MEMORY_UTILIZATION)]
    )
    finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    (args.out / f"engine_alone_c{concurrency}.txt").write_text(finished.stdout + finished.stderr)
    if finished.returncode != 0:
        raise RuntimeError(f"the engine alone failed:\n{finished.stdout}{finished.stderr}")
    rates = {}
    for line in finished.stdout.splitlines():  # "modelgate fp8 NAME.jsonl: 21504 output tok/s in ..."
        if line.startswith("modelgate ") and " output tok/s" in line:
            print(f"engine alone, max_num_seqs {concurrency}: {line}", flush=True)  # its steps beside the served ones
            label, rest = line.split(": ", 1)
            rates[label.split()[-1]] = float(rest.split()[0])
    return rates


def print_table(results: dict[Run, dict], engine: dict[str, float], device: str, http_workers: int = 1) -> None:
    print(f"\nserved by modelgate vs the engine alone on the same requests, {device}, {http_workers} HTTP process(es)")
    print(
        "| run | output tok/s | engine alone | served/engine | TensorRT-LLM | served/TRT-LLM | TTFT p50 ms "
        "| ITL p50 ms | TPOT p50 ms | server CPU µs/token | server TTFT mean ms | engine queue mean ms "
        "| engine steps | decode steps | launched ahead | decode step ms @ batch | prefill step ms @ tokens |"
    )
    print("| --- " * 17 + "|")
    for run, summary in results.items():
        rate = summary["output_token_throughput_per_s"]
        alone = engine.get(f"{run.name}.jsonl")
        trt = TENSORRT_LLM_H100.get(run.pattern) if (run.concurrency or 0) > 1 else None  # their tables: full load
        cells = [
            f"{run.protocol} {run.pattern} {run.load}",
            f"{rate:,.0f}",
            f"{alone:,.0f}" if alone else "",
            f"{rate / alone:.2f}" if alone else "",
            f"{trt:,}" if trt else "",
            f"{rate / trt:.2f}" if trt else "",
            f"{summary['ttft_s']['p50'] * 1e3:.1f}",
            f"{summary['itl_s']['p50'] * 1e3:.2f}",
            f"{summary['tpot_s']['p50'] * 1e3:.2f}",
            f"{summary['server_cpu_s'] / summary['total_output_tokens'] * 1e6:.1f}",
            *(ms_cell(summary["server_means_s"][name]) for name in SERVER_LATENCIES),
            *step_cells(summary["server_means_s"]),
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/modelgate-llama3-8b-random"))
    parser.add_argument("--tiny", action="store_true", help="tiny_llm on the CPU: a smoke run of the script")
    parser.add_argument(
        "--runs", nargs="+", help="protocol:ISL/OSL:LOAD:requests, LOAD 256 (concurrency) or r20 (Poisson, 20 req/s)"
    )
    parser.add_argument("--max-num-seqs", type=int, default=512)
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--skip-engine", action="store_true", help="served runs only")
    parser.add_argument(
        "--send-token-ids", action="store_true", help="prompts as token ids (bench llm --send-token-ids): no tokenizing"
    )
    parser.add_argument(
        "--client-processes", type=int, default=4, help="bench llm client processes per run (at most its concurrency)"
    )
    parser.add_argument("--profile", nargs="*", default=[], help="names of runs to profile with py-spy (--gil)")
    parser.add_argument("--profile-s", type=float, default=8.0, help="seconds of each profile")
    parser.add_argument("--out", type=Path, default=Path("/tmp/llm-served-vs-engine"))
    parser.add_argument("--http-workers", type=int, default=1, help="processes serving HTTP (serve --http-workers)")
    add_engine_parameter_option(parser)
    args = parser.parse_args()
    if args.tiny:
        args.checkpoint, args.max_model_len = TINY_LLM, 256
    elif not (args.checkpoint / "config.json").is_file():
        build = [sys.executable, "benchmarks/llm_engine_vs_transformers.py", "--build-only"]
        subprocess.run([*build, "--checkpoint", str(args.checkpoint)], check=True, cwd=ROOT)
    runs = [parse_run(text) for text in args.runs or (TINY_RUNS if args.tiny else GPU_RUNS)]
    args.out.mkdir(parents=True, exist_ok=True)
    repository = args.out / "repository"
    if not repository.exists():
        write_repository(repository, args.checkpoint, args)
    server = Server(repository, args.out / "server.log", extra_args=("--http-workers", str(args.http_workers)))
    results: dict[Run, dict] = {}
    try:
        server.wait_ready(timeout_s=600)
        for run in runs:
            profile_s = args.profile_s if run.name in args.profile else 0.0
            results[run] = bench(
                server, run, args.checkpoint, args.out, profile_s, args.client_processes, args.send_token_ids
            )
            print(f"{run.name}: {results[run]['output_token_throughput_per_s']:,.0f} output tok/s", flush=True)
    finally:
        server.stop()
    engine: dict[str, float] = {}
    if not args.skip_engine:
        closed = [run for run in runs if run.protocol == "generate_stream" and run.concurrency is not None]
        for concurrency in sorted({run.concurrency for run in closed}):
            files = [
                args.out / f"{r.name}.jsonl"
                for r in runs
                if r.protocol == "generate_stream" and r.concurrency == concurrency
            ]
            engine.update(engine_alone(args.checkpoint, files, concurrency, args))
    device = "CPU (tiny_llm)" if args.tiny else _gpu_name()
    print_table(results, engine, device, args.http_workers)


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


if __name__ == "__main__":
    main()
