"""One measured case of an HTTP benchmark: warm up, load one server, and account for everyone's CPU.

Besides throughput and latency, a case records how busy the server's core, the load
generator's core and the rest of the machine were, so that a table can say which side was the
bottleneck and whether a noisy neighbour disturbed the run.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.add_sub_requests import INFER_PATH, Encoding
from benchmarks.load_generator import LoadGenerator
from benchmarks.pinned_server import Server


@dataclass(frozen=True)
class CaseResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float  # fraction of one core the server used
    generator_cpu: float  # fraction of one core the load generator used
    other_cpu: float  # cores' worth of CPU that other processes (and the kernel) used meanwhile


def measure(
    generator: LoadGenerator, server: Server, encoding: Encoding, concurrency: int, duration_s: int, warmup_s: int
) -> CaseResult:
    """Warm up, then one measured run; CPU use of both sides (and of everything else) over it."""
    url = f"http://127.0.0.1:{server.port}{INFER_PATH}"
    if warmup_s > 0:
        generator.run(url, encoding, concurrency, warmup_s)
    before = CpuSnapshot.take(server)
    fields = generator.run(url, encoding, concurrency, duration_s)
    used = CpuSnapshot.take(server).minus(before)
    seconds = fields["duration_us"] / 1e6
    window = used.wall  # CPU shares over the whole window, including the generator's start and exit
    return CaseResult(
        requests_per_s=fields["requests"] / seconds,
        p50_ms=fields["p50_us"] / 1e3,
        p99_ms=fields["p99_us"] / 1e3,
        errors=int(fields["errors"]),
        server_cpu=used.server / window,
        generator_cpu=used.generator / window,
        other_cpu=max(0.0, used.machine - used.server - used.generator) / window,
    )


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far: the server's, the load generator's (finished children), the machine's; and wall time."""

    server: float
    generator: float
    machine: float
    wall: float

    @classmethod
    def take(cls, server: Server) -> CpuSnapshot:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(server.cpu_seconds(), usage.ru_utime + usage.ru_stime, _machine_busy_seconds(), time.monotonic())

    def minus(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            self.server - earlier.server,
            self.generator - earlier.generator,
            self.machine - earlier.machine,
            self.wall - earlier.wall,
        )


def _machine_busy_seconds() -> float:
    """Busy time of all cores: user, nice, system, irq, softirq and steal (what a noisy neighbour takes)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def median_run(runs: list[CaseResult]) -> CaseResult:
    """The run of median throughput: robust to a neighbour that disturbed one run."""
    return sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]
