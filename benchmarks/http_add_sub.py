"""HTTP throughput and latency of `add_sub`, against the limit of the HTTP stack on this machine.

For each encoding (plain KServe v2 JSON, binary tensor extension) and each concurrency, wrk
POSTs the same `add_sub` request over keep-alive connections (closed loop: one request in
flight per connection) to

- modelgate: `modelgate serve --model-repository model_repository`, started here;
- the peer: `bare_http_peer.py`, aiohttp on the same event loop type (uvloop where installed),
  answering with the exact bytes modelgate answered, without decoding or inference.

It prints requests/s, p50 and p99 latency for both, and the ratios modelgate/peer: what
modelgate's own work (decode, validate, schedule, run the model on its thread, encode) costs
on top of the HTTP stack. Both servers are pinned to one core and the load generator (and
this script) to another with taskset, so the load generator never competes with the server;
the CPU columns show how busy each side was (a server near 100% is the bottleneck).

    python benchmarks/http_add_sub.py --duration 10 --warmup 2 --concurrency 1 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bare_http_peer  # noqa: E402
from benchmarks.add_sub_requests import (  # noqa: E402
    MODEL,
    Encoding,
    binary_encoding,
    check_outputs,
    check_with_tritonclient,
    json_encoding,
    post,
)
from benchmarks.bare_http_peer import FixedResponse, save_responses  # noqa: E402
from benchmarks.http_add_sub_report import print_environment, print_table  # noqa: E402
from benchmarks.load_case import CaseResult, measure, median_run  # noqa: E402
from benchmarks.load_generator import LoadGenerator, generator_kind  # noqa: E402
from benchmarks.pinned_server import Server, free_port, start_server, stop_server  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per case (wrk takes whole seconds)")
    parser.add_argument("--warmup", type=int, default=2, help="warmup seconds before each case (0: none)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="connections, one request each")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per case and server, alternating the servers; the run of median req/s is shown",
    )
    parser.add_argument("--encodings", nargs="+", choices=["json", "binary"], default=["json", "binary"])
    parser.add_argument(
        "--load-generator",
        choices=["auto", "wrk", "aiohttp"],
        default="auto",
        help="auto: wrk if installed, else the aiohttp fallback",
    )
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the servers and the load generator; e.g. -10 (root) on a shared machine, so "
        "that other processes take less of the two cores",
    )
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    return parser.parse_args(argv)


def modelgate_command(repository: Path, port: int) -> list[str]:
    executable = shutil.which("modelgate")
    prefix = [executable] if executable else [sys.executable, "-m", "modelgate"]
    # Only add_sub: other models (an LLM engine with its busy loop, say) would share the server's core.
    command = [
        *prefix,
        "serve",
        "--model-repository",
        str(repository),
        "--model-control-mode",
        "explicit",
        "--load-model",
        MODEL,
        "--http-address",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--metrics-port",
        str(free_port()),
    ]
    serve_help = subprocess.run([*prefix, "serve", "--help"], check=False, capture_output=True, text=True).stdout
    if "--grpc-port" in serve_help:
        command += ["--grpc-address", "127.0.0.1", "--grpc-port", str(free_port())]  # never the default 8001
    return command


def start_servers(
    args: argparse.Namespace, encodings: list[Encoding], work_dir: Path, stack: ExitStack
) -> tuple[Server, Server, dict[str, FixedResponse]]:
    """modelgate, checked and recorded; then the peer replaying its answers, checked byte for byte."""
    modelgate = _start_modelgate(args, work_dir)
    stack.callback(stop_server, modelgate)
    check_with_tritonclient(modelgate.port)
    responses = {e.name: post(modelgate.port, e) for e in encodings}
    for encoding in encodings:
        check_outputs(responses[encoding.name], encoding)
    bare = _start_bare_peer(args, responses, work_dir)
    stack.callback(stop_server, bare)
    for encoding in encodings:
        if post(bare.port, encoding) != responses[encoding.name]:
            raise AssertionError(f"the bare peer's {encoding.name} response differs from modelgate's")
    return modelgate, bare, responses


def _start_modelgate(args: argparse.Namespace, work_dir: Path) -> Server:
    port = free_port()
    command = modelgate_command(args.model_repository, port)
    return start_server("modelgate", command, port, args.server_core, args.nice, work_dir)


def _start_bare_peer(args: argparse.Namespace, responses: dict[str, FixedResponse], work_dir: Path) -> Server:
    recorded = work_dir / "responses.json"
    save_responses(recorded, responses)
    port = free_port()
    command = [sys.executable, bare_http_peer.__file__, "--port", str(port), "--responses", str(recorded)]
    return start_server("bare-peer", command, port, args.server_core, args.nice, work_dir)


def compare(
    generator: LoadGenerator,
    modelgate: Server,
    bare: Server,
    encoding: Encoding,
    concurrency: int,
    args: argparse.Namespace,
) -> tuple[CaseResult, CaseResult]:
    """(modelgate, bare) for one case; the servers alternate run by run so that drift hits both alike."""
    mine, peer = [], []
    for _ in range(args.repeat):
        mine.append(measure(generator, modelgate, encoding, concurrency, args.duration, args.warmup))
        peer.append(measure(generator, bare, encoding, concurrency, args.duration, args.warmup))
    return median_run(mine), median_run(peer)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.sched_setaffinity(0, {args.client_core})  # keep this script off the server's core
    encodings = [e for e in (json_encoding(), binary_encoding()) if e.name in args.encodings]
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-add-sub-")))
        modelgate, bare, responses = start_servers(args, encodings, work_dir, stack)
        generator = LoadGenerator(generator_kind(args.load_generator), args.client_core, args.nice, work_dir)
        print_environment(args, generator, encodings, responses)
        rows = [
            (encoding.name, concurrency, *compare(generator, modelgate, bare, encoding, concurrency, args))
            for concurrency in args.concurrency
            for encoding in encodings
        ]
        print_table(rows)
    return 1 if any(mine.errors or peer.errors for _, _, mine, peer in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
