"""What `http_add_sub.py` prints: the setup it ran under, then the modelgate/bare ratio table and its warnings."""

from __future__ import annotations

import argparse
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.add_sub_requests import Encoding
from benchmarks.bare_http_peer import FixedResponse
from benchmarks.load_case import CaseResult
from benchmarks.load_generator import LoadGenerator

NOISY_NEIGHBOUR_CORES = 0.25  # other processes' CPU use during a run above which the table warns

Row = tuple[str, int, CaseResult, CaseResult]  # encoding name, concurrency, modelgate, bare peer


def print_environment(
    args: argparse.Namespace, generator: LoadGenerator, encodings: list[Encoding], responses: dict[str, FixedResponse]
) -> None:
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"aiohttp {package_version('aiohttp')}, event loop {_loop_name()}"
    )
    niceness = f"; all under nice -n {args.nice}" if args.nice else ""
    print(
        f"pinning (taskset): modelgate and the bare peer on core {args.server_core}; "
        f"load generator ({generator.describe()}, 1 thread) and this script on core {args.client_core}{niceness}"
    )
    repeats = f", {args.repeat} runs each side (the run of median req/s shown)" if args.repeat > 1 else ""
    print(
        f"per case: {args.warmup} s warmup, then {args.duration} s measured{repeats}; closed loop, "
        "one request in flight per connection (concurrency = connections)"
    )
    for encoding in encodings:
        print(
            f"{encoding.name:>6}: request {len(encoding.body)} B, response {len(responses[encoding.name].body)} B "
            "(the peer answers these exact bytes)"
        )
    print()


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'encoding':<8} {'conc':>4} | {'modelgate req/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5} | "
        f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5} | {'req/s ratio':>11} {'p50 ratio':>9} | "
        f"{'gen cpu':>9} {'other cpu':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, concurrency, mine, peer in rows:
        print(
            f"{name:<8} {concurrency:>4} | {_side(mine, 15)} | {_side(peer, 10)} | "
            f"{mine.requests_per_s / peer.requests_per_s:>11.2f} {mine.p50_ms / peer.p50_ms:>9.2f} | "
            f"{_pair(mine.generator_cpu, peer.generator_cpu):>9} {_pair(mine.other_cpu, peer.other_cpu):>9}"
        )
    print(
        "\nreq/s ratio, p50 ratio: modelgate / bare (req/s 1.00 = no overhead over the HTTP stack). cpu: the server's "
        "use of its core;\ngen cpu: the load generator's use of its core; other cpu: what other processes and the "
        "kernel used meanwhile\n(cores; high values mean a noisy neighbour). Pairs are modelgate/bare."
    )
    print_warnings(rows)


def print_warnings(rows: list[Row]) -> None:
    """Say which cases had failed requests, or shared the machine with other busy processes."""
    for name, concurrency, mine, peer in rows:
        if max(mine.other_cpu, peer.other_cpu) > NOISY_NEIGHBOUR_CORES:
            print(
                f"WARNING: {name} c={concurrency}: other processes used {_pair(mine.other_cpu, peer.other_cpu)} of a "
                "core meanwhile; these numbers are disturbed (rerun on a quiet machine, or with --repeat)"
            )
        if mine.errors or peer.errors:
            print(
                f"ERRORS in {name} c={concurrency}: modelgate {mine.errors}, bare {peer.errors} (non-2xx, timeouts, "
                "socket errors)"
            )


def _side(result: CaseResult, width: int) -> str:
    return (
        f"{result.requests_per_s:>{width},.0f} {result.p50_ms:>7.3f} {result.p99_ms:>7.3f} "
        f"{_percent(result.server_cpu):>5}"
    )


def _pair(mine: float, peer: float) -> str:
    return f"{_percent(mine)}/{_percent(peer)}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def package_version(package: str) -> str:
    """The installed version of `package`, or "not installed"."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _loop_name() -> str:
    installed = package_version("uvloop")
    return "asyncio (uvloop not installed)" if installed == "not installed" else f"uvloop {installed}"
