"""The host's CPU figures as Triton reports them (`nv_cpu_*`), read from Linux's /proc.

- utilization: the share of CPU time spent busy between two readings of /proc/stat's aggregate `cpu` line,
  over all cores: busy = user + nice + system + irq + softirq + steal, idle = idle + iowait (guest time is
  already inside user and nice, so it is not added again);
- memory: /proc/meminfo's MemTotal, and used = MemTotal - MemAvailable (what the kernel says could be handed
  out without swapping: page cache it can drop counts as available, not used).

Elsewhere than Linux (no /proc) the readings are None, and the CPU families are left out of /metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

PROC_STAT = Path("/proc/stat")
PROC_MEMINFO = Path("/proc/meminfo")
_KIB = 1024  # /proc/meminfo's "kB" are KiB


class CpuTimes(NamedTuple):
    """Cumulative time of all cores since boot, by state, in clock ticks (/proc/stat's `cpu` line)."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0


BOOT = CpuTimes()  # the counters' origin: utilization against it is the average since boot


class MemoryReading(NamedTuple):
    total_bytes: int
    used_bytes: int


def parse_cpu_times(stat_text: str) -> CpuTimes:
    """The aggregate `cpu` line of /proc/stat's text (states a kernel does not report count as 0)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            return CpuTimes(*(int(value) for value in fields[1 : 1 + len(CpuTimes._fields)]))
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def cpu_utilization(before: CpuTimes, after: CpuTimes) -> float | None:
    """Busy time / all time between two readings, in [0, 1]; None when no tick passed between them.

    A counter that went backwards (a reset, a hot-unplugged core's time leaving the sum) counts as 0 rather
    than as negative time.
    """
    elapsed = CpuTimes(*(max(0, new - old) for new, old in zip(after, before)))
    busy = elapsed.user + elapsed.nice + elapsed.system + elapsed.irq + elapsed.softirq + elapsed.steal
    idle = elapsed.idle + elapsed.iowait
    if busy + idle == 0:
        return None
    return busy / (busy + idle)


def parse_memory(meminfo_text: str) -> MemoryReading:
    """Total and used bytes from /proc/meminfo's text (used = MemTotal - MemAvailable)."""
    kib = {}
    for line in meminfo_text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            kib[key] = int(rest.split()[0])
    if len(kib) != 2:
        raise ValueError("/proc/meminfo lacks MemTotal or MemAvailable")
    total = kib["MemTotal"] * _KIB
    return MemoryReading(total, max(0, total - kib["MemAvailable"] * _KIB))


def read_cpu_times(path: Path = PROC_STAT) -> CpuTimes | None:
    """/proc/stat now; None where it cannot be read or parsed (not Linux)."""
    try:
        return parse_cpu_times(path.read_text())
    except (OSError, ValueError):
        return None


def read_memory(path: Path = PROC_MEMINFO) -> MemoryReading | None:
    """/proc/meminfo now; None where it cannot be read or parsed (not Linux)."""
    try:
        return parse_memory(path.read_text())
    except (OSError, ValueError, IndexError):
        return None
