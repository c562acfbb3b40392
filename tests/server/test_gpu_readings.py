"""One GPU's NVML figures in Triton's units, and the energy counter since start (fake NVML, no GPU needed)."""

import pytest

from modelgate.server.gpu_readings import EnergyMeter, read_gpu
from tests.server.fake_nvml import FakeGpu, FakeNvml


def test_units_are_a_fraction_bytes_and_watts(monkeypatch):
    nvml = FakeNvml(
        FakeGpu("GPU-1111", utilization_percent=37, power_milliwatts=123_456, power_limit_milliwatts=700_000)
    )
    nvml.install(monkeypatch)
    (gpu,) = nvml.nvml_gpus()
    reading = read_gpu(gpu)
    assert reading.utilization == pytest.approx(0.37)
    assert reading.memory_total_bytes == 80 * 2**30
    assert reading.memory_used_bytes == 3 * 2**30
    assert reading.power_usage_watts == pytest.approx(123.456)
    assert reading.power_limit_watts == pytest.approx(700.0)
    assert reading.energy_millijoules == 5_000_000


def test_a_figure_the_gpu_cannot_give_is_none_and_the_others_still_read(monkeypatch):
    unsupported = {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"}
    nvml = FakeNvml(FakeGpu("GPU-old", unsupported=unsupported))
    nvml.install(monkeypatch)
    reading = read_gpu(nvml.nvml_gpus()[0])
    assert reading.energy_millijoules is None and reading.power_usage_watts is None
    assert reading.power_limit_watts == pytest.approx(700.0) and reading.utilization == pytest.approx(0.37)


def test_energy_counts_joules_from_the_first_reading_and_never_goes_down():
    meter = EnergyMeter()
    assert meter.add(5_000_000) == 0.0  # the driver's count before the server started is not the server's
    assert meter.add(5_001_500) == pytest.approx(1.5)
    assert meter.add(5_004_000) == pytest.approx(4.0)
    assert meter.add(1_000) == pytest.approx(4.0)  # the driver reloaded: the counter restarted low
    assert meter.add(3_000) == pytest.approx(6.0)  # and counts on from there
