"""Custom metrics of python models (`pb_utils.MetricFamily` / `Metric`), kept in the server process.

Models declare families (counter, gauge, histogram) and metrics inside them by labels; the values live here,
in one store per process, exported through `modelgate.core.backend_metrics` on the server's `/metrics`. A model
on a thread calls the store directly; a model in a stub process sends each operation to the server, which
applies it here and answers the value (process_instance.py), so `value()` reads the server's value, as in Triton.

Rules, as Triton's python backend has them: a family's kind is fixed by its first declaration (the first
description stays too); metrics with the same labels are one metric; a counter only goes up and cannot be
set; a histogram needs sorted, distinct bucket bounds and only observes.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from modelgate.core.backend_metrics import BACKEND_METRICS

KINDS = ("counter", "gauge", "histogram")
OPERATIONS = ("create", "increment", "set", "value", "observe")


class MetricError(ValueError):
    """An operation the metric's kind does not allow; the message says which and why."""


@dataclass
class _Histogram:
    bounds: list[float]
    counts: list[int]
    total: float = 0.0
    count: int = 0


@dataclass
class _Family:
    kind: str
    description: str
    values: dict[tuple, float | _Histogram] = field(default_factory=dict)


class CustomMetricStore:
    """Thread-safe; registers itself as a collector of the backend registry."""

    def __init__(self, registry: CollectorRegistry = BACKEND_METRICS):
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        registry.register(self)

    def declare(self, name: str, description: str, kind: str) -> None:
        if kind not in KINDS:
            raise MetricError(f"metric family '{name}': kind must be one of {', '.join(KINDS)}, got {kind!r}")
        with self._lock:
            family = self._families.setdefault(name, _Family(kind, description))
        if family.kind != kind:
            raise MetricError(f"metric family '{name}' already exists as a {family.kind}, not a {kind}")

    def handle(
        self, name: str, description: str, kind: str, labels: dict, operation: str, value: float, buckets
    ) -> float | None:
        """One operation of a model's metric API: `declare` a family, or `apply` an operation to a metric."""
        if operation == "declare":
            self.declare(name, description, kind)
            return None
        if operation not in OPERATIONS:
            raise MetricError(f"unknown metric operation {operation!r}")
        return self.apply(name, labels, operation, value, buckets)

    def apply(
        self, name: str, labels: dict[str, str], operation: str, value: float = 0.0, buckets: list[float] | None = None
    ) -> float | None:
        """Do `operation` on the metric of `labels`; the counter's or gauge's value after it (None: histogram)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            family = self._families.get(name)
            if family is None:
                raise MetricError(f"metric family '{name}' was not declared")
            if operation == "create":
                return self._create(family, name, key, buckets)
            current = family.values.get(key)
            if current is None:
                current = family.values[key] = _new_value(family.kind, name, buckets)
            if family.kind == "histogram":
                return _histogram_operation(current, name, operation, value)
            updated = _scalar_operation(family.kind, current, name, operation, value)
            family.values[key] = updated
            return updated

    def _create(self, family: _Family, name: str, key: tuple, buckets: list[float] | None) -> float | None:
        current = family.values.get(key)
        if current is None:
            current = family.values[key] = _new_value(family.kind, name, buckets)
        return None if isinstance(current, _Histogram) else current

    def collect(self):
        with self._lock:
            snapshot = [(name, f.kind, f.description, dict(f.values)) for name, f in self._families.items()]
        for name, kind, description, values in snapshot:
            metric = Metric(name, description, kind)
            for key, value in values.items():
                labels = dict(key)
                if isinstance(value, _Histogram):
                    _histogram_samples(metric, name, labels, value)
                else:
                    metric.add_sample(name, labels, value)
            yield metric


def _new_value(kind: str, name: str, buckets: list[float] | None) -> float | _Histogram:
    if kind != "histogram":
        return 0.0
    if buckets is None:
        raise MetricError(f"histogram '{name}': a metric needs its bucket bounds (buckets=[...])")
    if any(later <= earlier for earlier, later in zip(buckets, buckets[1:])):
        raise MetricError(f"histogram '{name}': bucket bounds must increase strictly, got {buckets}")
    return _Histogram(list(buckets), [0] * (len(buckets) + 1))


def _scalar_operation(kind: str, current: float, name: str, operation: str, value: float) -> float:
    if operation == "value":
        return current
    if operation == "increment":
        if kind == "counter" and value < 0:
            raise MetricError(f"counter '{name}' only goes up: increment by {value} refused")
        return current + value
    if operation == "set" and kind == "gauge":
        return value
    raise MetricError(f"{kind} '{name}' does not support {operation}()")


def _histogram_operation(histogram: _Histogram, name: str, operation: str, value: float) -> None:
    if operation != "observe":
        raise MetricError(f"histogram '{name}' does not support {operation}(): only observe()")
    histogram.counts[bisect.bisect_left(histogram.bounds, value)] += 1
    histogram.total += value
    histogram.count += 1
    return None


def _histogram_samples(metric: Metric, name: str, labels: dict, histogram: _Histogram) -> None:
    cumulative = 0
    for bound, count in zip([*histogram.bounds, float("inf")], histogram.counts):
        cumulative += count
        le = "+Inf" if bound == float("inf") else format(bound, "g")
        metric.add_sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
    metric.add_sample(f"{name}_count", labels, histogram.count)
    metric.add_sample(f"{name}_sum", labels, histogram.total)


_STORE: CustomMetricStore | None = None
_STORE_LOCK = threading.Lock()


def custom_metric_store() -> CustomMetricStore:
    """This process's store, created (and registered for /metrics) on first use."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            _STORE = CustomMetricStore()
        return _STORE
