"""The server process's CPU per streamed token, by protocol: what serving adds on top of the engine.

Starts `modelgate serve` over the example tiny_llm (CPU engine, --max-num-seqs streams at once) and loads it
with `modelgate bench llm` over each protocol. The server's CPU is its own process's user + system time
(every thread: frontends, event loop, the engine client's reader), not the engine process's; the tokens are
the server's `modelgate_llm_generation_tokens_total`. The engine's own rate on this machine bounds tok/s;
the figure to watch is µs of server CPU per token (issue 18's goal: under 15), split into user time (Python)
and system time (the kernel: mostly the socket write of each streamed event), and the part of it spent on the
server's event loop (its main thread). Below the table, the floor that
write sets, measured in the same run (socket_write_floor.py): what one small write to a loopback TCP socket costs
the writer, and the server's CPU per token in units of it; with gRPC, grpcio's own cost per streamed message
(grpc_stream_floor.py), also measured in the same run.

    python benchmarks/llm_server_cpu_per_token.py [--protocols generate_stream,grpc] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from grpc_stream_floor import Floor
from grpc_stream_floor import floor as grpc_floor
from llm_served_vs_engine import Server
from socket_write_floor import write_floor_us

from modelgate.server.frontend_workers.control_messages import REPORT_INTERVAL_S

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "model_repository" / "tiny_llm" / "1"
CONFIG = """name: "tiny_llm"
backend: "llm"
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "max_model_len" value {{ string_value: "256" }} }}
parameters {{ key: "num_kv_blocks" value {{ string_value: "{blocks}" }} }}
parameters {{ key: "block_size" value {{ string_value: "16" }} }}
parameters {{ key: "max_num_seqs" value {{ string_value: "{seqs}" }} }}
parameters {{ key: "show_progress" value {{ string_value: "false" }} }}
"""


def generated_tokens(metrics_port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text
    found = re.findall(r"^modelgate_llm_generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return sum(float(value) for value in found)


def process_cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of `pid`, every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def loop_thread_cpu(pid: int) -> float:
    """CPU seconds of `pid`'s main thread: the server's event loop (HTTP, gRPC calls, token delivery). Beside the
    process's total, it isolates a change to the loop's work from the noise of the other threads."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(pids: list[int]) -> tuple[float, float]:
    splits = [process_cpu_split(pid) for pid in pids]
    return sum(user for user, _ in splits), sum(system for _, system in splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default="generate_stream,openai-completions,grpc")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--isl", type=int, default=32)
    parser.add_argument("--osl", type=int, default=96)
    parser.add_argument("--http-workers", type=int, default=1, help="processes serving HTTP (serve --http-workers)")
    args = parser.parse_args()
    repository = Path(tempfile.mkdtemp())
    (repository / "tiny_llm").mkdir()
    (repository / "tiny_llm" / "1").symlink_to(CHECKPOINT)
    blocks = args.concurrency * ((args.isl + args.osl) // 16 + 2)
    (repository / "tiny_llm" / "config.pbtxt").write_text(CONFIG.format(blocks=blocks, seqs=args.concurrency))
    extra_args = ("--allow-cpu-metrics", "false", "--http-workers", str(args.http_workers))
    protocols = args.protocols.split(",")
    grpc_floors = measure_grpc_floors(args) if "grpc" in protocols else None
    server = Server(repository, repository / "server.log", "tiny_llm", extra_args)
    cpu_per_token: list[float] = []  # µs, by protocol
    try:
        server.wait_ready(timeout_s=60)
        pids = server.frontend_pids()  # the server and its HTTP workers: their CPU is what serving costs
        print(f"tiny_llm, {args.concurrency} streams, ISL/OSL {args.isl}/{args.osl}, {args.num_requests} requests")
        print(f"{len(pids)} process(es) serving HTTP (--http-workers {args.http_workers})")
        print(
            "\n| protocol | output tok/s | server CPU s | server CPU per token (µs) | user (µs) | system (µs) "
            "| event loop (µs) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for protocol in protocols:
            url = server.url(protocol)
            bench = [sys.executable, "-m", "modelgate", "bench", "llm", "--url", url, "-m", "tiny_llm"]
            bench += ["--protocol", protocol, "--tokenizer", str(CHECKPOINT), "--isl", str(args.isl)]
            bench += ["--osl", str(args.osl), "--concurrency", str(args.concurrency), "--no-progress"]
            bench += ["--num-requests", str(args.num_requests), "--extra-body", '{"ignore_eos": true}']
            tokens, (user, system), started = generated_tokens(server.metrics), cpu_split(pids), time.monotonic()
            loop_cpu = loop_thread_cpu(pids[0])
            subprocess.run(bench, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            elapsed = time.monotonic() - started
            user_after, system_after = cpu_split(pids)
            loop_cpu = loop_thread_cpu(pids[0]) - loop_cpu
            user, system = user_after - user, system_after - system
            cpu = user + system
            time.sleep(2 * REPORT_INTERVAL_S)  # the workers' last token counts reach the server's /metrics
            tokens = generated_tokens(server.metrics) - tokens
            per_token = 1e6 / tokens
            row = f"| {protocol} | {tokens / elapsed:,.0f} | {cpu:.2f} | {cpu * per_token:.1f} "
            print(row + f"| {user * per_token:.1f} | {system * per_token:.1f} | {loop_cpu * per_token:.1f} |")
            cpu_per_token.append(cpu * per_token)
    finally:
        server.stop()
    floor = write_floor_us(args.concurrency)
    print(f"\nfloor: one event write to one of {args.concurrency} loopback TCP connections costs {floor:.1f} µs of CPU")
    print("server CPU per token / floor: " + ", ".join(f"{value / floor:.1f}x" for value in cpu_per_token))
    if grpc_floors is not None:
        print_grpc_floor(
            *grpc_floors, [value for protocol, value in zip(protocols, cpu_per_token) if protocol == "grpc"]
        )


def measure_grpc_floors(args: argparse.Namespace) -> tuple[Floor, Floor]:
    """grpcio's own cost per streamed message (grpc_stream_floor.py), on modelgate's transport (the lower of two
    runs: a floor) and on grpc.aio. Measured before the server starts: its engine, stopping, would weigh on it."""
    step_ms = 1000 * args.concurrency / 6000  # tiny_llm's step here at 64 streams: ~6,000 tok/s
    loop = min(
        (grpc_floor("loop", args.concurrency, args.num_requests, args.osl, step_ms) for _ in range(2)),
        key=lambda floor: floor.per_message_us,
    )
    return loop, grpc_floor("aio", args.concurrency, args.num_requests, args.osl, step_ms)


def print_grpc_floor(loop: Floor, aio: Floor, grpc_per_token: list[float]) -> None:
    """What no gRPC server in Python goes below, beside the server's gRPC rows."""
    print(
        f"gRPC floor: a bare server streaming the same token message on modelgate's transport (grpcio's threaded "
        f"server, calls on the loop) costs {loop.per_message_us:.1f} µs of CPU per message "
        f"({loop.writes_us:.1f} in the loop's sends); on grpc.aio {aio.per_message_us:.1f}"
    )
    ratios = ", ".join(f"{value / loop.per_message_us:.1f}x" for value in grpc_per_token)
    print(f"server gRPC CPU per token / gRPC floor: {ratios}")


if __name__ == "__main__":
    main()
