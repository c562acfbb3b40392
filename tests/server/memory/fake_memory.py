"""A fake machine behind the ledger's DeviceMemory interface: GPUs and a host of given sizes, whose use moves
only when a model (a python model on a thread, in this process) says it allocated or freed."""

from __future__ import annotations

import threading

from modelgate.server.memory.device_memory import DeviceMemory, MemoryDevice

GIB = 2**30


class FakeMemory(DeviceMemory):
    def __init__(self, gpu_bytes: list[int], host_bytes: int = 64 * GIB):
        self._devices = [MemoryDevice("GPU", i, f"fake GPU {i}", size) for i, size in enumerate(gpu_bytes)]
        self._devices.append(MemoryDevice("CPU", 0, "fake host", host_bytes))
        self._used = {(d.kind, d.id): 0 for d in self._devices}
        self._lock = threading.Lock()

    def devices(self) -> list[MemoryDevice]:
        return list(self._devices)

    def used_bytes(self, device: MemoryDevice) -> int:
        with self._lock:
            return self._used[(device.kind, device.id)]

    def allocate(self, kind: str, device_id: int, count: int) -> None:
        """Negative `count` frees."""
        with self._lock:
            self._used[(kind, device_id)] += count


# The machine the thread-isolated python models of a test allocate on (they import this module).
MACHINE: FakeMemory | None = None
