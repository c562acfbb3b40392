"""CPU utilization from two /proc/stat readings and memory from /proc/meminfo, as Triton computes them."""

import pytest

from modelgate.server.cpu_readings import (
    BOOT,
    CpuTimes,
    cpu_utilization,
    parse_cpu_times,
    parse_memory,
    read_cpu_times,
    read_memory,
)

# user nice system idle iowait irq softirq steal guest guest_nice
STAT_BEFORE = "cpu  100 10 50 800 40 0 0 0 7 0\ncpu0 50 5 25 400 20 0 0 0 3 0\nintr 12345\n"
STAT_AFTER = "cpu  160 10 70 900 50 5 4 1 90 0\ncpu0 80 5 35 450 25 2 2 1 45 0\nintr 23456\n"


def test_the_aggregate_line_is_read_and_guest_time_is_left_out():
    assert parse_cpu_times(STAT_BEFORE) == CpuTimes(100, 10, 50, 800, 40, 0, 0, 0)
    assert parse_cpu_times(STAT_AFTER) == CpuTimes(160, 10, 70, 900, 50, 5, 4, 1)


def test_utilization_is_busy_over_busy_plus_idle_between_two_readings():
    before, after = parse_cpu_times(STAT_BEFORE), parse_cpu_times(STAT_AFTER)
    busy = 60 + 0 + 20 + 5 + 4 + 1  # user nice system irq softirq steal
    idle = 100 + 10  # idle iowait: waiting for I/O is not work
    assert cpu_utilization(before, after) == pytest.approx(busy / (busy + idle))
    # Guest time (90 - 7 ticks) is inside user already: counting it again would give 173 / 283.
    assert cpu_utilization(before, after) == pytest.approx(0.45)


def test_utilization_bounds_and_no_tick():
    idle_only = CpuTimes(idle=500)
    assert cpu_utilization(BOOT, idle_only) == 0.0
    assert cpu_utilization(BOOT, CpuTimes(user=3, system=1)) == 1.0
    assert cpu_utilization(idle_only, idle_only) is None  # no tick between them: no figure, not 0 / 0


def test_a_counter_that_goes_back_counts_as_no_time():
    before = CpuTimes(user=1000, idle=1000)
    after = CpuTimes(user=10, idle=1100)  # user reset: not -990 ticks
    assert cpu_utilization(before, after) == 0.0


def test_the_first_reading_against_boot_is_the_average_since_boot():
    assert cpu_utilization(BOOT, parse_cpu_times(STAT_BEFORE)) == pytest.approx(160 / 1000)


def test_used_memory_is_total_minus_available_in_bytes():
    meminfo = "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    4096 kB\nCached: 2048 kB\n"
    reading = parse_memory(meminfo)
    assert reading.total_bytes == 16384 * 1024
    assert reading.used_bytes == (16384 - 4096) * 1024  # page cache the kernel can drop is not "used"


def test_unreadable_or_foreign_files_give_none(tmp_path):
    assert read_cpu_times(tmp_path / "missing") is None
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    assert read_cpu_times(tmp_path / "stat") is None
    (tmp_path / "meminfo").write_text("MemTotal: 1024 kB\n")  # a kernel older than MemAvailable
    assert read_memory(tmp_path / "meminfo") is None


def test_this_machines_proc_reads():
    times = read_cpu_times()
    memory = read_memory()
    assert times is not None and sum(times) > 0
    assert memory is not None and 0 < memory.used_bytes <= memory.total_bytes
