"""One measured case of `python_backend_vs_triton.py`: one server, one protocol, warm-up then a fixed duration.

The load comes from `add_sub_load.py` (the same generator, byte for byte the same requests, for
every server), pinned to its own core. Besides throughput and latency the case records how busy
the server was (its process and descendants, so a python-backend stub counts), how busy the
generator was (a generator near 100% is measuring itself), and what the rest of the machine used.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from benchmarks import add_sub_load
from benchmarks.load_case import CpuSnapshot
from benchmarks.load_generator import run_result
from benchmarks.pinned_server import Server


@dataclass(frozen=True)
class CaseLoad:
    """How one case loads its server: protocol, the server's port for it, and the generator's settings."""

    protocol: str  # "http" (KServe v2 JSON) or "grpc"
    port: int
    concurrency: int
    duration_s: float
    warmup_s: float
    core: int
    niceness: int


@dataclass(frozen=True)
class Measured:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # failed requests
    wrong: int  # answers with wrong values
    server_cpu: float  # fraction of one core: the server's process and its descendants
    generator_cpu: float  # fraction of one core the generator used while it sent
    other_cpu: float  # cores' worth of CPU that other processes (and the kernel) used meanwhile
    server_processes: int  # the server's process and its descendants during the run


def measure(server: Server, load: CaseLoad) -> Measured:
    """Warm up, then one measured run of `load` against `server`."""
    if load.warmup_s > 0:
        _generate(load, load.warmup_s)
    before = CpuSnapshot.take(server)
    fields = _generate(load, load.duration_s)
    processes = len(server.process_ids())
    used = CpuSnapshot.take(server).minus(before)
    seconds = fields["duration_us"] / 1e6
    return Measured(
        requests_per_s=fields["requests"] / seconds,
        p50_ms=fields["p50_us"] / 1e3,
        p99_ms=fields["p99_us"] / 1e3,
        errors=int(fields["errors"]),
        wrong=int(fields["wrong"]),
        # The server idles while the generator starts and exits, so its share is of the sending time.
        server_cpu=used.server / seconds,
        generator_cpu=fields["cpu_us"] / fields["duration_us"],
        other_cpu=max(0.0, used.machine - used.server - used.generator) / used.wall,
        server_processes=processes,
    )


def _generate(load: CaseLoad, duration_s: float) -> dict[str, float]:
    command = [
        sys.executable,
        add_sub_load.__file__,
        "--protocol",
        load.protocol,
        "--port",
        str(load.port),
        "--concurrency",
        str(load.concurrency),
        "--duration",
        str(duration_s),
    ]
    return run_result(f"add_sub_load ({load.protocol})", command, load.core, load.niceness)
