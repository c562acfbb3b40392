"""Triton's hardware families on /metrics: `nv_gpu_*` and `nv_energy_consumption` per GPU (label `gpu_uuid`),
`nv_cpu_*` for the host.

A sampler thread reads /proc and NVML every --metrics-interval-ms (NVML calls take milliseconds: never on the
event loop) and keeps the last sample; a scrape of /metrics only formats that sample. Without a GPU (no NVML
library or driver) or with --allow-gpu-metrics false the GPU families are absent, not zero; likewise the CPU
families with --allow-cpu-metrics false or without /proc. A figure one GPU cannot give leaves out that GPU's
series only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from modelgate.core.nvml import NvmlGpu, nvml_gpus
from modelgate.server import cpu_readings
from modelgate.server.cpu_readings import BOOT, CpuTimes, MemoryReading, cpu_utilization
from modelgate.server.gpu_readings import EnergyMeter, GpuReading, read_gpu
from modelgate.server.settings import ServerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuSample:
    utilization: float | None  # [0, 1], over all cores, since the previous sample (the first: since boot)
    memory: MemoryReading | None


@dataclass(frozen=True)
class GpuSample:
    uuid: str
    reading: GpuReading
    energy_joules: float | None  # since the sampler's first sample


@dataclass(frozen=True)
class HardwareSample:
    cpu: CpuSample | None  # None: CPU metrics are off
    gpus: tuple[GpuSample, ...]  # (): no GPU, or GPU metrics are off


NOTHING_YET = HardwareSample(None, ())


class HardwareSampler:
    """Samples the host's CPU and `gpus` every `interval_s` on a daemon thread of its own.

    `sample()` blocks (it reads /proc and calls NVML) and is called by one thread at a time: once by whoever
    starts the sampler, then by its thread. `latest` is replaced whole, never mutated, so a reader on another
    thread (the /metrics handler) sees one sample or the next, never a mix.
    """

    def __init__(
        self,
        interval_s: float,
        gpus: Sequence[NvmlGpu],
        with_cpu: bool,
        read_cpu_times: Callable[[], CpuTimes | None] = cpu_readings.read_cpu_times,
        read_memory: Callable[[], MemoryReading | None] = cpu_readings.read_memory,
    ):
        self.interval_s = interval_s
        self.gpus = tuple(gpus)
        self.with_cpu = with_cpu
        self._read_cpu_times = read_cpu_times
        self._read_memory = read_memory
        self._cpu_times = BOOT  # the first utilization is the average since boot: a figure from the start
        self._cpu_utilization: float | None = None
        self._energy = {gpu.uuid: EnergyMeter() for gpu in self.gpus}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest = NOTHING_YET

    def sample(self) -> HardwareSample:
        """Read everything now, keep it as `latest` and return it."""
        self.latest = HardwareSample(self._sample_cpu() if self.with_cpu else None, self._sample_gpus())
        return self.latest

    def start(self) -> None:
        """Sample every interval from now on (the first one interval from now)."""
        self._thread = threading.Thread(target=self._run, name="modelgate-hardware-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does at once unless it is sampling (milliseconds). Does not wait."""
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # a figure gone bad must not end the sampling of all the others
                logger.exception("hardware metrics: sampling failed; keeping the previous sample")

    def _sample_cpu(self) -> CpuSample:
        times = self._read_cpu_times()
        if times is not None:
            utilization = cpu_utilization(self._cpu_times, times)
            if utilization is not None:  # None: no tick since the last sample; the last figure stands
                self._cpu_utilization = utilization
            self._cpu_times = times
        return CpuSample(self._cpu_utilization if times is not None else None, self._read_memory())

    def _sample_gpus(self) -> tuple[GpuSample, ...]:
        samples = []
        for gpu in self.gpus:
            reading = read_gpu(gpu)
            energy = reading.energy_millijoules
            joules = None if energy is None else self._energy[gpu.uuid].add(energy)
            samples.append(GpuSample(gpu.uuid, reading, joules))
        return tuple(samples)


# (name, help, type, value of a sample); help texts are Triton's ("the server" started, not "the Triton Server").
_GPU_FAMILIES: list[tuple[str, str, str, Callable[[GpuSample], float | None]]] = [
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge", lambda g: g.reading.utilization),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge", lambda g: g.reading.memory_total_bytes),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge", lambda g: g.reading.memory_used_bytes),
    ("nv_gpu_power_usage", "GPU power usage in watts", "gauge", lambda g: g.reading.power_usage_watts),
    ("nv_gpu_power_limit", "GPU power management limit in watts", "gauge", lambda g: g.reading.power_limit_watts),
    (
        "nv_energy_consumption",
        "GPU energy consumption in joules since the server started",
        "counter",
        lambda g: g.energy_joules,
    ),
]
_CPU_FAMILIES: list[tuple[str, str, Callable[[CpuSample], float | None]]] = [
    ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", lambda c: c.utilization),
    (
        "nv_cpu_memory_total_bytes",
        "CPU total memory (RAM), in bytes",
        lambda c: None if c.memory is None else c.memory.total_bytes,
    ),
    (
        "nv_cpu_memory_used_bytes",
        "CPU used memory (RAM), in bytes",
        lambda c: None if c.memory is None else c.memory.used_bytes,
    ),
]


class HardwareMetricsCollector:
    """A prometheus_client collector formatting the sampler's latest sample; a family without a value is left
    out whole (no HELP/TYPE lines without samples)."""

    def __init__(self, sampler: HardwareSampler):
        self.sampler = sampler

    def collect(self):
        sample = self.sampler.latest
        for name, help_text, kind, value_of in _GPU_FAMILIES:
            values = [({"gpu_uuid": g.uuid}, value_of(g)) for g in sample.gpus]
            yield from _family(name, help_text, kind, values)
        if sample.cpu is not None:
            for name, help_text, value_of in _CPU_FAMILIES:
                yield from _family(name, help_text, "gauge", [({}, value_of(sample.cpu))])


def _family(name: str, help_text: str, kind: str, values: list[tuple[dict[str, str], float | None]]):
    present = [(labels, value) for labels, value in values if value is not None]
    if not present:
        return
    family = Metric(name, help_text, kind)
    for labels, value in present:
        family.add_sample(name, labels, value)
    yield family


async def start_hardware_sampler(settings: ServerSettings, registry: CollectorRegistry) -> HardwareSampler | None:
    """Find the GPUs, take the first sample and sample every --metrics-interval-ms from then on, all off the
    event loop; the families go on `registry`. None when there is nothing to sample (metrics off, or neither
    CPU metrics nor a GPU to report)."""
    if not settings.allow_metrics:
        return None
    gpus = await asyncio.to_thread(nvml_gpus) if settings.allow_gpu_metrics else ()
    if not (gpus or settings.allow_cpu_metrics):
        return None
    sampler = HardwareSampler(settings.metrics_interval_ms / 1000, gpus, settings.allow_cpu_metrics)
    await asyncio.to_thread(sampler.sample)  # /metrics has figures from its first scrape on
    sampler.start()
    registry.register(HardwareMetricsCollector(sampler))
    return sampler
