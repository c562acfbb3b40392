"""What the memory ledger asks of the hardware: the devices, their size, and how much is in use on each.

`SystemMemory` answers from NVML for GPUs (nvml.py) and from /proc for the host. The host's "in use" is the
resident memory of this server and every process it started (python-model stubs, LLM engines), not the
whole machine's: other programs on the host are not the server's to account for. Tests put a fake behind the
same interface (`DeviceMemory`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from modelgate.core.nvml import gpu_total_bytes, gpu_used_bytes, nvml_gpus


@dataclass(frozen=True)
class MemoryDevice:
    kind: str  # "GPU" or "CPU", as in instance_group and Triton's MemoryUsage.type
    id: int  # the CUDA device number; 0 for the host
    name: str
    total_bytes: int

    @property
    def label(self) -> str:
        return f"GPU {self.id}" if self.kind == "GPU" else "CPU"


class DeviceMemory(ABC):
    @abstractmethod
    def devices(self) -> list[MemoryDevice]:
        """The GPUs this process sees (CUDA's numbering), then the host ("CPU", id 0)."""

    @abstractmethod
    def used_bytes(self, device: MemoryDevice) -> int:
        """Bytes in use on `device` now: the whole GPU's (any process), or the host memory of this server's
        processes. Differences taken around a load are what the load cost."""


class SystemMemory(DeviceMemory):
    def devices(self) -> list[MemoryDevice]:
        gpus = [MemoryDevice("GPU", gpu.cuda_id, gpu.name, gpu_total_bytes(gpu)) for gpu in nvml_gpus()]
        return gpus + [MemoryDevice("CPU", 0, "host", host_total_bytes())]

    def used_bytes(self, device: MemoryDevice) -> int:
        if device.kind == "CPU":
            return process_tree_rss_bytes(os.getpid())
        used = gpu_used_bytes(device.id)
        if used is None:
            raise OSError(f"NVML cannot read {device.label}")
        return used


def host_total_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemTotal")


def process_tree_rss_bytes(root_pid: int) -> int:
    """Resident bytes of `root_pid` and all its descendants (a process that ends meanwhile counts 0)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            # After the command name: state, ppid, ... ; field 24 of stat (index 21 here) is rss in pages.
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, pending = 0, [root_pid]
    while pending:
        pid = pending.pop()
        total += rss.get(pid, 0)
        pending.extend(children.get(pid, []))
    return total
