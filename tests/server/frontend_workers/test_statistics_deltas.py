"""A worker's statistics, sent as deltas and absorbed by the primary, add up to recording all in one place."""

import itertools
from types import SimpleNamespace

import msgspec
import pytest

from modelgate.server import statistics
from modelgate.server.frontend_workers.statistics_deltas import (
    BatchDelta,
    DeltaTracker,
    DurationDelta,
    StatisticsDelta,
    absorb,
)
from modelgate.server.statistics import StatisticsRegistry, VersionStatistics


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """Each record_* call sees a later millisecond: last_inference is deterministic and the max matters."""
    seconds = itertools.count(1_000_000)
    monkeypatch.setattr(statistics, "time", SimpleNamespace(time=lambda: float(next(seconds))))


def serve_some(stats: VersionStatistics, scale: int) -> None:
    """Executions of two batch sizes, successes and failures of two reasons."""
    stats.record_execution(batch_size=1, num_requests=1, input_ns=10 * scale, infer_ns=20 * scale, output_ns=5)
    stats.record_success(request_ns=100 * scale, queue_ns=7, batch_size=1, compute_ns=(10 * scale, 20, 5))
    stats.record_execution(batch_size=4, num_requests=2, input_ns=11, infer_ns=22 * scale, output_ns=6)
    stats.record_success(request_ns=90, queue_ns=8 * scale, batch_size=4, compute_ns=(11, 22, 6 * scale))
    stats.record_failure(request_ns=50 * scale, reason="BACKEND")
    stats.record_failure(request_ns=40, reason="CANCELED" if scale % 2 else "REJECTED")


def worker_with(*scales: int) -> tuple[StatisticsRegistry, VersionStatistics]:
    registry, stats = StatisticsRegistry(), VersionStatistics("llm", "1")
    registry.register(stats)
    for scale in scales:
        serve_some(stats, scale)
    return registry, stats


def test_absorbed_deltas_equal_recording_everything_in_one_place():
    primary, reference = VersionStatistics("llm", "1"), VersionStatistics("llm", "1")
    serve_some(primary, scale=3)
    serve_some(reference, scale=3)
    registry, worker = worker_with()
    serve_some(worker, scale=2)
    serve_some(reference, scale=2)
    [delta] = DeltaTracker().deltas(registry)
    absorb(primary, delta)
    # The clock moves on with every record (here and in the reference): the worker served after the primary.
    assert primary.as_dict() == {**reference.as_dict(), "last_inference": worker.last_inference_ms}


def test_last_inference_keeps_the_later_of_primary_and_worker():
    registry, _ = worker_with(1)
    primary = VersionStatistics("llm", "1")
    serve_some(primary, scale=1)  # after the worker's records: later clock values
    latest = primary.last_inference_ms
    absorb(primary, DeltaTracker().deltas(registry)[0])
    assert primary.last_inference_ms == latest


def test_a_second_call_carries_only_new_increments():
    registry, stats = worker_with(1)
    tracker, primary, reference = DeltaTracker(), VersionStatistics("llm", "1"), VersionStatistics("llm", "1")
    serve_some(reference, scale=1)
    absorb(primary, tracker.deltas(registry)[0])
    stats.record_execution(batch_size=4, num_requests=4, input_ns=1, infer_ns=2, output_ns=3)
    stats.record_failure(request_ns=9, reason="BACKEND")
    reference.record_execution(batch_size=4, num_requests=4, input_ns=1, infer_ns=2, output_ns=3)
    reference.record_failure(request_ns=9, reason="BACKEND")
    [delta] = tracker.deltas(registry)
    assert (delta.execution_count, delta.executed_requests, delta.inference_count) == (1, 4, 0)
    assert delta.fail == DurationDelta(1, 9)
    assert delta.failures_by_reason == {"BACKEND": 1}  # CANCELED did not change
    assert delta.batches == {4: BatchDelta(DurationDelta(1, 1), DurationDelta(1, 2), DurationDelta(1, 3))}
    absorb(primary, delta)
    reference.last_inference_ms = stats.last_inference_ms  # the clock moved on for each object separately
    assert primary.as_dict() == reference.as_dict()


def test_nothing_changed_gives_no_deltas():
    registry, _ = worker_with(1)
    tracker = DeltaTracker()
    assert len(tracker.deltas(registry)) == 1
    assert tracker.deltas(registry) == []
    assert DeltaTracker().deltas(worker_with()[0]) == []  # a version that never served


def test_only_changed_versions_are_sent():
    registry, _ = worker_with(1)
    other = VersionStatistics("llm", "2")
    registry.register(other)
    tracker = DeltaTracker()
    tracker.deltas(registry)
    other.record_failure(request_ns=5, reason="OTHER")
    assert [(d.name, d.version) for d in tracker.deltas(registry)] == [("llm", "2")]


def test_a_version_that_returns_starts_from_zero():
    registry, stats = worker_with(1)
    tracker = DeltaTracker()
    tracker.deltas(registry)
    registry.remove("llm", "1")
    assert tracker.deltas(registry) == []
    again = VersionStatistics("llm", "1")
    registry.register(again)
    again.record_failure(request_ns=5, reason="OTHER")
    [delta] = tracker.deltas(registry)
    assert (delta.fail, delta.failures_by_reason, delta.execution_count) == (DurationDelta(1, 5), {"OTHER": 1}, 0)


def test_a_reload_that_replaces_the_statistics_starts_from_zero():
    registry, _ = worker_with(1, 2)
    tracker = DeltaTracker()
    tracker.deltas(registry)
    reloaded = VersionStatistics("llm", "1")
    registry.register(reloaded)  # same key, new object, without a deltas() call in between
    reloaded.record_failure(request_ns=5, reason="OTHER")
    [delta] = tracker.deltas(registry)
    assert delta.fail == DurationDelta(1, 5)


def test_pending_requests_and_memory_usage_stay_the_primarys():
    registry, stats = worker_with(1)
    stats.pending_requests, stats.memory_usage = 3, [{"type": "GPU", "id": 0, "byte_size": 1}]
    primary = VersionStatistics("llm", "1", pending_requests=1)
    absorb(primary, DeltaTracker().deltas(registry)[0])
    assert (primary.pending_requests, primary.memory_usage) == (1, [])


def test_a_msgpack_round_trip_keeps_every_field():
    registry, stats = worker_with(1, 2)
    stats.instance_restarts = 2
    deltas = DeltaTracker().deltas(registry)
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(deltas), type=list[StatisticsDelta])
    assert decoded == deltas
    assert msgspec.to_builtins(decoded) == msgspec.to_builtins(deltas)
    primary = VersionStatistics("llm", "1")
    absorb(primary, decoded[0])
    assert primary.as_dict() == stats.as_dict()
