"""A fake NVML for CPU machines: pynvml's device queries answered from per-GPU figures in NVML's own units
(percent, bytes, milliwatts, millijoules), so that the GPU metrics can be tested without a GPU."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml

from modelgate.core.nvml import NvmlGpu


@dataclass
class FakeGpu:
    uuid: str
    utilization_percent: int = 37
    memory_total: int = 80 * 2**30
    memory_used: int = 3 * 2**30
    power_milliwatts: int = 123_456
    power_limit_milliwatts: int = 700_000
    energy_millijoules: int = 5_000_000  # since the driver loaded: the server must count from its own start
    energy_step_millijoules: int = 0  # added after each read: a GPU drawing power
    unsupported: set[str] = field(default_factory=set)  # names of queries that raise NVMLError_NotSupported


class FakeNvml:
    """Patches pynvml's device queries (use `install(monkeypatch)`); the handles are the FakeGpu objects.

    `calling_threads` records the thread of every query: NVML must never be called on the event loop.
    """

    def __init__(self, *gpus: FakeGpu):
        self.gpus = gpus
        self.calling_threads: list[threading.Thread] = []

    def nvml_gpus(self) -> tuple[NvmlGpu, ...]:
        return tuple(NvmlGpu(i, gpu.uuid, "Fake H100", gpu) for i, gpu in enumerate(self.gpus))

    def install(self, monkeypatch) -> None:
        queries = {
            "nvmlDeviceGetUtilizationRates": lambda g: SimpleNamespace(gpu=g.utilization_percent, memory=0),
            "nvmlDeviceGetMemoryInfo": lambda g: SimpleNamespace(
                total=g.memory_total, used=g.memory_used, free=g.memory_total - g.memory_used
            ),
            "nvmlDeviceGetPowerUsage": lambda g: g.power_milliwatts,
            "nvmlDeviceGetPowerManagementLimit": lambda g: g.power_limit_milliwatts,
            "nvmlDeviceGetTotalEnergyConsumption": self._energy,
        }
        for name, answer in queries.items():
            monkeypatch.setattr(pynvml, name, self._query(name, answer))
        monkeypatch.setattr("modelgate.server.hardware_metrics.nvml_gpus", self.nvml_gpus)

    def _query(self, name, answer):
        def query(handle: FakeGpu, *args):
            self.calling_threads.append(threading.current_thread())
            if name in handle.unsupported:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return answer(handle)

        return query

    @staticmethod
    def _energy(gpu: FakeGpu) -> int:
        value = gpu.energy_millijoules
        gpu.energy_millijoules += gpu.energy_step_millijoules
        return value
