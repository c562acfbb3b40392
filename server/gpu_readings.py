"""One GPU's figures from NVML (nvidia-ml-py), in the units of Triton's `nv_gpu_*` families.

NVML reports utilization in percent, memory in bytes, power in milliwatts and the energy counter in
millijoules since the driver loaded; a reading carries a fraction, bytes, watts and millijoules. Each figure is
read on its own: one a GPU does not support (energy before Volta, power on some boards) is None and only its
series is left out, the others still show.

The calls block for up to milliseconds each: they run on the hardware sampler's thread, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pynvml

from modelgate.core.nvml import NvmlGpu

logger = logging.getLogger(__name__)

_PERCENT = 100
_MILLI = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class GpuReading:
    utilization: float | None  # [0, 1]
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    power_usage_watts: float | None
    power_limit_watts: float | None
    energy_millijoules: int | None  # NVML's counter, since the driver loaded


def read_gpu(gpu: NvmlGpu) -> GpuReading:
    """NVML's figures for `gpu` now; a figure NVML cannot give is None."""
    handle = gpu.handle
    memory = _figure(gpu, "memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    return GpuReading(
        utilization=_figure(gpu, "utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / _PERCENT),
        memory_total_bytes=None if memory is None else int(memory.total),
        memory_used_bytes=None if memory is None else int(memory.used),
        power_usage_watts=_figure(gpu, "power usage", lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / _MILLI),
        power_limit_watts=_figure(
            gpu, "power limit", lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / _MILLI
        ),
        energy_millijoules=_figure(gpu, "energy", lambda: int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))),
    )


def _figure(gpu: NvmlGpu, what: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except pynvml.NVMLError as exc:
        # Debug only: an unsupported figure fails the same way every interval.
        logger.debug("NVML gives no %s for GPU %d (%s): %s", what, gpu.cuda_id, gpu.uuid, exc)
        return None


class EnergyMeter:
    """Joules a GPU used since the first reading it was given (Triton's `nv_energy_consumption`: since start).

    Monotonic, as a counter must be: a counter that went backwards (the driver reloaded) adds nothing for that
    interval and counts on from its new value.
    """

    def __init__(self):
        self._last_millijoules: int | None = None
        self.joules = 0.0

    def add(self, millijoules: int) -> float:
        """Take NVML's counter now; the joules since the first reading."""
        if self._last_millijoules is not None:
            self.joules += max(0, millijoules - self._last_millijoules) / _MILLI
        self._last_millijoules = millijoules
        return self.joules
