"""Cumulative per-model-version statistics with Triton's semantics.

One `VersionStatistics` per loaded (model, version). It is mutated only on the event loop
thread (schedulers record after awaiting the instance), so it needs no lock. The stats
endpoints and the Prometheus collector both read from here: one source of truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


# Keys of `as_dict` beyond Triton's ModelStatistics message (the gRPC frontend leaves them out).
EXTENSION_FIELDS = ("instance_restarts",)


@dataclass
class VersionStatistics:
    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0  # successful samples (batch rows)
    execution_count: int = 0  # successful model executions
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    # The response cache's lookups (a hit: its lookup; a miss: its lookup and insertion), as Triton's.
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    uses_response_cache: bool = False  # its model enables the cache: the cache metrics show it
    batches: dict[int, BatchStatistics] = field(default_factory=dict)
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    pending_requests: int = 0
    executed_requests: int = 0  # requests over all executions: / execution_count = requests batched per execution
    # Instances that stopped (a python model's process died) and serve again. Not Triton's: HTTP shows it as
    # `instance_restarts`; gRPC's ModelStatistics has no field for it (modelgate_python_stub_restarts_total has).
    instance_restarts: int = 0
    # Triton's MemoryUsage entries ({"type", "id", "byte_size"}): what the memory ledger holds for the instances.
    memory_usage: list[dict] = field(default_factory=list)

    def record_execution(
        self, batch_size: int, num_requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution of `num_requests` requests, `batch_size` rows in all (whatever their outcome)."""
        self.execution_count += 1
        self.executed_requests += num_requests
        batch = self.batches.setdefault(batch_size, BatchStatistics())
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def record_success(self, request_ns: int, queue_ns: int, batch_size: int, compute_ns: tuple[int, int, int]) -> None:
        self.last_inference_ms = int(time.time() * 1000)
        self.inference_count += batch_size
        self.success.add(request_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(compute_ns[0])
        self.compute_infer.add(compute_ns[1])
        self.compute_output.add(compute_ns[2])

    def record_cache_hit(self, lookup_ns: int) -> None:
        """A request answered from the response cache: a success that waited in no queue and ran nothing."""
        self.last_inference_ms = int(time.time() * 1000)
        self.cache_hit.add(lookup_ns)
        self.success.add(lookup_ns)
        self.queue.add(0)

    def record_cache_miss(self, cache_ns: int) -> None:
        self.cache_miss.add(cache_ns)

    def record_failure(self, request_ns: int, reason: str) -> None:
        """`reason` is Triton's failure label: REJECTED, CANCELED, BACKEND or OTHER."""
        self.last_inference_ms = int(time.time() * 1000)
        self.fail.add(request_ns)
        self.failures_by_reason[reason] = self.failures_by_reason.get(reason, 0) + 1

    def as_dict(self) -> dict:
        """Triton's `$model_stat` JSON object."""
        durations = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        inference_stats = {name: getattr(self, name).as_dict() for name in (*durations, "cache_hit", "cache_miss")}
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": inference_stats,
            "response_stats": {},
            "batch_stats": [_batch_dict(size, stats) for size, stats in sorted(self.batches.items())],
            "memory_usage": [dict(usage) for usage in self.memory_usage],
            EXTENSION_FIELDS[0]: self.instance_restarts,
        }


def _batch_dict(size: int, stats: BatchStatistics) -> dict:
    return {
        "batch_size": size,
        "compute_input": stats.compute_input.as_dict(),
        "compute_infer": stats.compute_infer.as_dict(),
        "compute_output": stats.compute_output.as_dict(),
    }


class StatisticsRegistry:
    """All VersionStatistics of loaded model versions, by (name, version)."""

    def __init__(self):
        self._by_key: dict[tuple[str, str], VersionStatistics] = {}

    def register(self, stats: VersionStatistics) -> None:
        """Publish `stats` (replacing those of a previous load of the same version)."""
        self._by_key[(stats.name, stats.version)] = stats

    def remove(self, name: str, version: str) -> None:
        self._by_key.pop((name, version), None)

    def all(self) -> list[VersionStatistics]:
        return [self._by_key[key] for key in sorted(self._by_key)]

    def select(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        return [s for s in self.all() if (not name or s.name == name) and (not version or s.version == version)]
