"""A frontend worker's request statistics, sent to the primary as increments and added into its own.

A worker serves some requests of a model version itself (LLM streams) and records them in a
`StatisticsRegistry` of its own; the primary answers the statistics endpoints and `/metrics` for the whole
server. So the worker sends what changed since its last message (`DeltaTracker.deltas`) and the primary adds
it in (`absorb`). Increments rather than totals: the primary's own VersionStatistics already counts what the
primary served, and summing increments needs no memory of each worker's past on the primary's side.

Not carried: `pending_requests` and `memory_usage`, which describe the primary's queues and instances.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from modelgate.server.statistics import BatchStatistics, Duration, StatisticsRegistry, VersionStatistics

__all__ = ["BatchDelta", "DeltaTracker", "DurationDelta", "StatisticsDelta", "absorb"]

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_BATCH_DURATIONS = ("compute_input", "compute_infer", "compute_output")
_COUNTS = ("inference_count", "execution_count", "executed_requests", "instance_restarts")


class _Message(msgspec.Struct, array_like=True, frozen=True):
    """Encoded as an array of its fields in order: the worker and the primary always run the same code."""


class DurationDelta(_Message):
    count: int = 0
    ns: int = 0


class BatchDelta(_Message):
    compute_input: DurationDelta = DurationDelta()
    compute_infer: DurationDelta = DurationDelta()
    compute_output: DurationDelta = DurationDelta()


class StatisticsDelta(_Message):
    """What one (name, version) gained in a worker since its previous delta; `last_inference_ms` is the latest
    value, not an increment (the primary keeps the max)."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    executed_requests: int = 0
    instance_restarts: int = 0
    success: DurationDelta = DurationDelta()
    fail: DurationDelta = DurationDelta()
    queue: DurationDelta = DurationDelta()
    compute_input: DurationDelta = DurationDelta()
    compute_infer: DurationDelta = DurationDelta()
    compute_output: DurationDelta = DurationDelta()
    batches: dict[int, BatchDelta] = {}  # by batch size; only sizes that changed
    failures_by_reason: dict[str, int] = {}  # only reasons that changed


class _Seen(NamedTuple):
    stats: VersionStatistics  # held to tell a reload's new object (which starts from zero) from the old one
    totals: StatisticsDelta


class DeltaTracker:
    """Worker side: remembers the totals it last reported for each version, to send only what changed."""

    def __init__(self):
        self._seen: dict[tuple[str, str], _Seen] = {}

    def deltas(self, registry: StatisticsRegistry) -> list[StatisticsDelta]:
        """The increments since the previous call, one per version that changed. A version that left the
        registry (or was registered anew by a reload) counts from zero when it is next seen."""
        found, seen = [], {}
        for stats in registry.all():
            key = (stats.name, stats.version)
            previous = self._seen.get(key)
            before = previous.totals if previous is not None and previous.stats is stats else _zero(stats)
            now = _totals(stats)
            seen[key] = _Seen(stats, now)
            if now != before:
                found.append(_minus(now, before))
        self._seen = seen
        return found


def absorb(stats: VersionStatistics, delta: StatisticsDelta) -> None:
    """Primary side: add a worker's increments into the primary's statistics of that version."""
    stats.last_inference_ms = max(stats.last_inference_ms, delta.last_inference_ms)
    for name in _COUNTS:
        setattr(stats, name, getattr(stats, name) + getattr(delta, name))
    for name in _DURATIONS:
        _add(getattr(stats, name), getattr(delta, name))
    for size, batch in delta.batches.items():
        into = stats.batches.setdefault(size, BatchStatistics())
        for name in _BATCH_DURATIONS:
            _add(getattr(into, name), getattr(batch, name))
    for reason, count in delta.failures_by_reason.items():
        stats.failures_by_reason[reason] = stats.failures_by_reason.get(reason, 0) + count


def _add(into: Duration, delta: DurationDelta) -> None:
    into.add(delta.ns, delta.count)


def _zero(stats: VersionStatistics) -> StatisticsDelta:
    return StatisticsDelta(stats.name, stats.version)


def _duration(duration: Duration) -> DurationDelta:
    return DurationDelta(duration.count, duration.ns)


def _totals(stats: VersionStatistics) -> StatisticsDelta:
    """Everything `stats` counted so far, as an increment from zero."""
    return StatisticsDelta(
        name=stats.name,
        version=stats.version,
        last_inference_ms=stats.last_inference_ms,
        **{name: getattr(stats, name) for name in _COUNTS},
        **{name: _duration(getattr(stats, name)) for name in _DURATIONS},
        batches={
            size: BatchDelta(*(_duration(getattr(batch, name)) for name in _BATCH_DURATIONS))
            for size, batch in stats.batches.items()
        },
        failures_by_reason=dict(stats.failures_by_reason),
    )


def _minus(now: StatisticsDelta, before: StatisticsDelta) -> StatisticsDelta:
    batches = {}
    for size, batch in now.batches.items():
        earlier = before.batches.get(size, BatchDelta())
        if batch != earlier:
            batches[size] = BatchDelta(
                *(_duration_minus(getattr(batch, n), getattr(earlier, n)) for n in _BATCH_DURATIONS)
            )
    failures = {
        reason: count - before.failures_by_reason.get(reason, 0)
        for reason, count in now.failures_by_reason.items()
        if count != before.failures_by_reason.get(reason, 0)
    }
    return StatisticsDelta(
        name=now.name,
        version=now.version,
        last_inference_ms=now.last_inference_ms,
        **{name: getattr(now, name) - getattr(before, name) for name in _COUNTS},
        **{name: _duration_minus(getattr(now, name), getattr(before, name)) for name in _DURATIONS},
        batches=batches,
        failures_by_reason=failures,
    )


def _duration_minus(now: DurationDelta, before: DurationDelta) -> DurationDelta:
    return DurationDelta(now.count - before.count, now.ns - before.ns)
