"""The server's CPU split per request and per token, by thread: where llm_server_cpu_per_token.py's figure goes.

Starts `modelgate serve` over the example tiny_llm as llm_server_cpu_per_token.py does, and loads it with
`modelgate bench llm` at two output lengths per protocol. Each thread's CPU (/proc/PID/task) per request is fitted
as a + b * OSL: `a` is what a request costs whatever its length (request parsing, the engine hand-off, the RPC's
set-up and end, the first and last responses), `b` what each further token costs. Threads are grouped by name:
the event loop (the main thread), grpc core's own threads, and, where py-spy is on PATH (`py-spy dump` gives each
thread's Python name), the LLM instance's thread, grpc's polling thread and the engine client's reader; without
py-spy the Python threads other than the loop are one group.

Threads idle in a run still wake up (grpc's, under HTTP load): their few µs per request there are that.
Short outputs make the per-request part stand out: on a shared 2-core machine one run's per-request figure moves
by some ±60 µs, so compare builds in alternated pairs and read the median difference.

    python benchmarks/llm_server_cpu_split.py [--protocols generate_stream,grpc] [--osls 8,96] [--requests 2048,384]
        [--isl 32] [--send-token-ids]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from llm_served_vs_engine import Server
from llm_server_cpu_per_token import CHECKPOINT, CONFIG, generated_tokens

from modelgate.server.frontend_workers.control_messages import REPORT_INTERVAL_S

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


class Fit(NamedTuple):
    per_request_us: float  # what a request costs whatever its length
    per_token_us: float  # what each further token costs


def fit(per_request_by_osl: dict[int, float]) -> Fit:
    """a + b * OSL through the two (OSL, µs per request) points."""
    (short, short_us), (long, long_us) = sorted(per_request_by_osl.items())
    per_token = (long_us - short_us) / (long - short)
    return Fit(short_us - per_token * short, per_token)


def thread_group(tid: int, pid: int, comm: str, python_names: dict[int, str]) -> str:
    """The group a thread's CPU is counted in (module docstring)."""
    if tid == pid:
        return "event loop"
    if comm.startswith(("event_engine", "grpc")):
        return "grpc core threads"
    name = python_names.get(tid)
    if name is None:
        return "other threads"
    if name.startswith("instance-"):
        return "LLM instance thread"
    if name.endswith("(_serve)"):
        return "grpc polling thread"
    return re.sub(r"[-_]?\d+$", "", name)


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of `pid`: its name in the kernel (comm) and its user + system CPU seconds."""
    threads = {}
    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended
            continue
        threads[tid] = (comm, (int(fields[11]) + int(fields[12])) / _TICKS)
    return threads


def python_thread_names(pid: int) -> dict[int, str]:
    """Thread id -> Python thread name, from `py-spy dump` where py-spy is installed; else empty."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        return {}
    dump = subprocess.run([py_spy, "dump", "--nonblocking", "-p", str(pid)], capture_output=True, text=True).stdout
    return {int(tid): name for tid, name in re.findall(r'Thread (\d+) \(\w+\): "([^"]*)"', dump)}


def run_load(server: Server, protocol: str, osl: int, num_requests: int, args) -> tuple[dict[str, float], float]:
    """One `bench llm` run: CPU seconds by thread group, and the tokens generated."""
    pid = server.process.pid
    bench = [sys.executable, "-m", "modelgate", "bench", "llm", "--url", server.url(protocol), "-m", "tiny_llm"]
    bench += ["--protocol", protocol, "--tokenizer", str(CHECKPOINT), "--isl", str(args.isl), "--osl", str(osl)]
    bench += ["--concurrency", str(args.concurrency), "--no-progress", "--num-requests", str(num_requests)]
    bench += ["--extra-body", '{"ignore_eos": true}', *(["--send-token-ids"] if args.send_token_ids else [])]
    tokens, before = generated_tokens(server.metrics), thread_cpu(pid)
    load = subprocess.Popen(bench, stdout=subprocess.DEVNULL, cwd=ROOT)
    time.sleep(2)  # the threads that serve the load have started
    names = python_thread_names(pid)
    load.wait()
    after = thread_cpu(pid)
    time.sleep(2 * REPORT_INTERVAL_S)
    by_group: dict[str, float] = defaultdict(float)
    for tid, (comm, cpu) in after.items():
        by_group[thread_group(tid, pid, comm, names)] += cpu - before.get(tid, (comm, 0.0))[1]
    tokens = generated_tokens(server.metrics) - tokens
    if load.returncode != 0 or tokens != osl * num_requests:
        # A failed request still costs the server CPU but generates nothing: its figures would be wrong.
        raise SystemExit(
            f"{protocol} OSL {osl}: bench exited {load.returncode}, {tokens:.0f} of {osl * num_requests} tokens"
        )
    return by_group, tokens


def print_split(protocol: str, osls: list[int], num_requests: list[int], runs: list[dict[str, float]]) -> None:
    print(f"\n{protocol}: µs of server CPU per request at OSL {osls[0]} and {osls[1]}, fitted as a + b * OSL")
    print(
        f"| thread | at OSL {osls[0]} | at OSL {osls[1]} | per request (a) | per token (b) | µs/token at OSL {osls[1]} |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    groups = {group for run in runs for group, cpu in run.items() if cpu > 0}
    groups = sorted(groups, key=lambda group: -runs[1].get(group, 0.0))
    for group in [*groups, "total"]:
        points = {
            osl: 1e6 * (sum(run.values()) if group == "total" else run.get(group, 0.0)) / count
            for osl, count, run in zip(osls, num_requests, runs)
        }
        split = fit(points)
        row = f"| {group} | {points[osls[0]]:.0f} | {points[osls[1]]:.0f} | {split.per_request_us:.0f} "
        print(row + f"| {split.per_token_us:.2f} | {points[osls[1]] / osls[1]:.2f} |")


def checkpoint_for(max_len: int, folder: Path) -> Path:
    """The tiny checkpoint, or where it is too short for `max_len` tokens a copy in `folder` whose config allows
    them: rotary positions need no weights, so only max_position_embeddings changes."""
    config = json.loads((CHECKPOINT / "config.json").read_text())
    if max_len <= config["max_position_embeddings"]:
        return CHECKPOINT
    folder.mkdir()
    for file in CHECKPOINT.iterdir():
        (folder / file.name).symlink_to(file)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": max_len}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default="generate_stream,grpc")
    parser.add_argument("--osls", default="8,96", help="the two output lengths")
    parser.add_argument("--requests", default="2048,384", help="requests at each output length")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--isl", type=int, default=32)
    parser.add_argument(
        "--send-token-ids", action="store_true", help="prompts as token ids (bench llm --send-token-ids): no tokenizing"
    )
    args = parser.parse_args()
    osls, num_requests = [int(v) for v in args.osls.split(",")], [int(v) for v in args.requests.split(",")]
    repository = Path(tempfile.mkdtemp())
    (repository / "tiny_llm").mkdir()
    max_len = max(256, args.isl + max(osls) + 16)
    (repository / "tiny_llm" / "1").symlink_to(checkpoint_for(max_len, repository / "checkpoint"))
    blocks = args.concurrency * ((args.isl + max(osls)) // 16 + 2)
    config = CONFIG.format(blocks=blocks, seqs=args.concurrency).replace('"256"', f'"{max_len}"', 1)
    (repository / "tiny_llm" / "config.pbtxt").write_text(config)
    server = Server(repository, repository / "server.log", "tiny_llm", ("--allow-cpu-metrics", "false"))
    try:
        server.wait_ready(timeout_s=60)
        print(f"tiny_llm, {args.concurrency} streams, ISL {args.isl}, OSL {osls} with {num_requests} requests")
        for protocol in args.protocols.split(","):
            runs = [run_load(server, protocol, osl, count, args)[0] for osl, count in zip(osls, num_requests)]
            print_split(protocol, osls, num_requests, runs)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
