"""Triton's hardware families on /metrics: nv_cpu_* from /proc, nv_gpu_* and nv_energy_consumption per GPU from
NVML (a fake one here: no GPU needed), sampled off the event loop, absent where there is nothing to report."""

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelgate.core.nvml import nvml_gpus
from modelgate.server.cpu_readings import CpuTimes, MemoryReading
from modelgate.server.hardware_metrics import HardwareMetricsCollector, HardwareSampler
from tests.server.fake_nvml import FakeGpu, FakeNvml

CPU_FAMILIES = ("nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes")
GPU_FAMILIES = (
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
)
NO_PERIODIC_SAMPLES = 3_600_000  # ms: only the sample taken at start, so the figures are known


def _families(url: str) -> dict:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _by_gpu(family) -> dict[str, float]:
    return {sample.labels["gpu_uuid"]: sample.value for sample in family.samples}


def _mem_total_bytes() -> int:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


def _collected(sampler: HardwareSampler) -> dict:
    return {family.name: family for family in HardwareMetricsCollector(sampler).collect()}


def test_cpu_families_through_a_real_server(make_server, tmp_path):
    running = make_server([tmp_path])
    families = _families(running.metrics_url)
    for name in CPU_FAMILIES:
        assert families[name].type == "gauge"
        assert [s.labels for s in families[name].samples] == [{}]  # host-wide: one series, no labels
    (utilization,) = families["nv_cpu_utilization"].samples
    (total,) = families["nv_cpu_memory_total_bytes"].samples
    (used,) = families["nv_cpu_memory_used_bytes"].samples
    assert 0.0 <= utilization.value <= 1.0
    assert total.value == _mem_total_bytes()
    assert 0 < used.value <= total.value


def test_gpu_families_are_absent_not_zero_without_nvml(make_server, tmp_path, monkeypatch):
    monkeypatch.setattr("modelgate.server.hardware_metrics.nvml_gpus", lambda: ())  # no library, no driver
    families = _families(make_server([tmp_path]).metrics_url)
    assert not set(GPU_FAMILIES) & set(families)
    assert set(CPU_FAMILIES) <= set(families)


def test_gpu_families_show_exactly_where_nvml_finds_gpus(make_server, tmp_path):
    families = _families(make_server([tmp_path]).metrics_url)  # this machine's real NVML (none on CI)
    expected = {gpu.uuid for gpu in nvml_gpus()}
    for name in GPU_FAMILIES:
        if expected:
            assert set(_by_gpu(families[name])) == expected
        else:
            assert name not in families


def test_allow_cpu_metrics_false_removes_the_cpu_families(make_server, tmp_path):
    families = _families(make_server([tmp_path], allow_cpu_metrics=False).metrics_url)
    assert not set(CPU_FAMILIES) & set(families)
    assert "nv_inference_count" in families  # the rest of /metrics is still served


def test_fake_gpus_through_a_real_server_names_labels_and_units(make_server, tmp_path, monkeypatch):
    nvml = FakeNvml(FakeGpu("GPU-aaaa", energy_step_millijoules=2_500), FakeGpu("GPU-bbbb", utilization_percent=90))
    nvml.install(monkeypatch)
    running = make_server([tmp_path], metrics_interval_ms=NO_PERIODIC_SAMPLES)
    families = _families(running.metrics_url)
    assert {name: families[name].type for name in GPU_FAMILIES} == {
        **{name: "gauge" for name in GPU_FAMILIES},
        "nv_energy_consumption": "counter",  # Triton's name, without _total
    }
    assert _by_gpu(families["nv_gpu_utilization"]) == {"GPU-aaaa": 0.37, "GPU-bbbb": 0.9}
    assert _by_gpu(families["nv_gpu_memory_total_bytes"]) == {"GPU-aaaa": 80 * 2**30, "GPU-bbbb": 80 * 2**30}
    assert _by_gpu(families["nv_gpu_memory_used_bytes"]) == {"GPU-aaaa": 3 * 2**30, "GPU-bbbb": 3 * 2**30}
    assert _by_gpu(families["nv_gpu_power_usage"]) == pytest.approx({"GPU-aaaa": 123.456, "GPU-bbbb": 123.456})
    assert _by_gpu(families["nv_gpu_power_limit"]) == {"GPU-aaaa": 700.0, "GPU-bbbb": 700.0}
    # Joules since the server started: the driver's 5,000 J before it do not count.
    assert _by_gpu(families["nv_energy_consumption"]) == {"GPU-aaaa": 0.0, "GPU-bbbb": 0.0}
    running.server.hardware.sample()  # what the sampler thread does every interval
    assert _by_gpu(_families(running.metrics_url)["nv_energy_consumption"]) == {"GPU-aaaa": 2.5, "GPU-bbbb": 0.0}


def test_nvml_is_never_called_on_the_event_loop_nor_by_a_scrape(make_server, tmp_path, monkeypatch):
    nvml = FakeNvml(FakeGpu("GPU-aaaa"))
    nvml.install(monkeypatch)
    running = make_server([tmp_path], metrics_interval_ms=NO_PERIODIC_SAMPLES)
    calls_at_start = len(nvml.calling_threads)
    assert calls_at_start > 0
    for _ in range(3):
        _families(running.metrics_url)
    assert len(nvml.calling_threads) == calls_at_start  # /metrics serves the last sample, it does not sample
    assert running.thread not in nvml.calling_threads


def test_the_sampler_thread_samples_every_interval(make_server, tmp_path, monkeypatch):
    nvml = FakeNvml(FakeGpu("GPU-aaaa", energy_step_millijoules=1_000))
    nvml.install(monkeypatch)
    running = make_server([tmp_path], metrics_interval_ms=10)
    deadline = time.monotonic() + 30  # a bound on a wait, not a timing: on a loaded machine it may take longer
    energy = 0.0
    while energy < 3.0 and time.monotonic() < deadline:
        energy = _by_gpu(_families(running.metrics_url)["nv_energy_consumption"])["GPU-aaaa"]
        time.sleep(0.02)
    assert energy >= 3.0  # three samples after the first, each 1 J later
    assert running.thread not in nvml.calling_threads


def test_allow_gpu_metrics_false_removes_the_gpu_families(make_server, tmp_path, monkeypatch):
    nvml = FakeNvml(FakeGpu("GPU-aaaa"))
    nvml.install(monkeypatch)
    families = _families(make_server([tmp_path], allow_gpu_metrics=False).metrics_url)
    assert not set(GPU_FAMILIES) & set(families)
    assert nvml.calling_threads == []
    assert set(CPU_FAMILIES) <= set(families)


def test_a_figure_no_gpu_gives_leaves_out_its_family_and_one_gpu_lacking_it_leaves_out_its_series(monkeypatch):
    nvml = FakeNvml(
        FakeGpu("GPU-new"),
        FakeGpu("GPU-old", unsupported={"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"}),
    )
    nvml.install(monkeypatch)
    families = _collected(_sample_once(HardwareSampler(1.0, nvml.nvml_gpus(), with_cpu=False)))
    assert set(_by_gpu(families["nv_energy_consumption"])) == {"GPU-new"}
    assert set(_by_gpu(families["nv_gpu_power_usage"])) == {"GPU-new"}
    assert set(_by_gpu(families["nv_gpu_power_limit"])) == {"GPU-new", "GPU-old"}

    nvml = FakeNvml(FakeGpu("GPU-old", unsupported={"nvmlDeviceGetTotalEnergyConsumption"}))
    nvml.install(monkeypatch)
    families = _collected(_sample_once(HardwareSampler(1.0, nvml.nvml_gpus(), with_cpu=False)))
    assert "nv_energy_consumption" not in families and "nv_gpu_utilization" in families


def test_the_sampler_computes_cpu_utilization_between_its_samples():
    readings = iter(
        [
            CpuTimes(user=300, idle=700),  # since boot: 0.3
            CpuTimes(user=350, idle=750),  # this interval: 50 of 100 busy
            CpuTimes(user=350, idle=750),  # no tick since: the last figure stands
            CpuTimes(user=360, system=20, idle=780, iowait=20),  # 30 of 80
        ]
    )
    memory = MemoryReading(total_bytes=1000, used_bytes=400)
    sampler = HardwareSampler(1.0, (), with_cpu=True, read_cpu_times=lambda: next(readings), read_memory=lambda: memory)
    assert [sampler.sample().cpu.utilization for _ in range(4)] == pytest.approx([0.3, 0.5, 0.5, 30 / 80])
    families = _collected(sampler)
    assert [s.value for s in families["nv_cpu_memory_used_bytes"].samples] == [400]
    assert set(families) == set(CPU_FAMILIES)  # no GPU: no GPU family at all


def test_without_proc_the_cpu_families_are_absent():
    sampler = HardwareSampler(1.0, (), with_cpu=True, read_cpu_times=lambda: None, read_memory=lambda: None)
    assert _collected(_sample_once(sampler)) == {}


def _sample_once(sampler: HardwareSampler) -> HardwareSampler:
    sampler.sample()
    return sampler


@pytest.mark.gpu
def test_real_nvml_reports_every_gpu_family(make_server, tmp_path):
    import pynvml

    gpus = nvml_gpus()
    assert gpus, "a CUDA GPU but no NVML GPU"
    families = _families(make_server([tmp_path]).metrics_url)
    expected = {gpu.uuid for gpu in gpus}
    for name in GPU_FAMILIES:
        assert set(_by_gpu(families[name])) == expected, name
    for gpu in gpus:
        total = _by_gpu(families["nv_gpu_memory_total_bytes"])[gpu.uuid]
        assert total == pynvml.nvmlDeviceGetMemoryInfo(gpu.handle).total
        assert 0 < _by_gpu(families["nv_gpu_memory_used_bytes"])[gpu.uuid] <= total
        assert 0.0 <= _by_gpu(families["nv_gpu_utilization"])[gpu.uuid] <= 1.0
        limit = _by_gpu(families["nv_gpu_power_limit"])[gpu.uuid]
        assert 10 < limit < 2000  # watts, not milliwatts
        assert 0 < _by_gpu(families["nv_gpu_power_usage"])[gpu.uuid] <= 1.5 * limit
        assert _by_gpu(families["nv_energy_consumption"])[gpu.uuid] >= 0.0
