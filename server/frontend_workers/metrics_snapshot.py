"""A frontend worker's backend metrics, summed into the primary's `/metrics`.

LLM latencies and token counters are observed where responses leave, which for a stream a worker serves is
the worker's process, in the worker's own `BACKEND_METRICS`. The worker sends `snapshot(BACKEND_METRICS)`
now and then; the primary's `WorkerMetrics` renders its own backend registry with every worker's latest
counters and histograms added in. Totals rather than increments: a snapshot that is lost or late costs
nothing, and a worker's share leaves with it (`forget`).

Gauges stay out: the engine's gauges (running, waiting, KV cache) are set in the primary from the engine's
own reports, and a worker's copies would only count them again.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

__all__ = ["MetricFamilySnapshot", "SampleSnapshot", "WorkerMetrics", "snapshot"]

_SUMMED_TYPES = ("counter", "histogram")


class SampleSnapshot(msgspec.Struct, array_like=True, frozen=True):
    name: str  # the sample's own name: `x_total`, `x_bucket`, `x_sum`, `x_count`
    labels: dict[str, str]
    value: float


class MetricFamilySnapshot(msgspec.Struct, array_like=True, frozen=True):
    name: str
    type: str  # "counter" or "histogram"
    documentation: str
    samples: list[SampleSnapshot]


def snapshot(registry: CollectorRegistry) -> list[MetricFamilySnapshot]:
    """The counter and histogram families of `registry` as they stand, without `_created` samples (a worker's
    creation times mean nothing next to the primary's series)."""
    return [
        MetricFamilySnapshot(
            family.name,
            family.type,
            family.documentation,
            [
                SampleSnapshot(sample.name, dict(sample.labels), float(sample.value))
                for sample in family.samples
                if sample.name != f"{family.name}_created"
            ],
        )
        for family in registry.collect()
        if family.type in _SUMMED_TYPES
    ]


# (sample name, sorted labels): how a worker's sample finds the primary's sample it adds to.
_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class WorkerMetrics:
    """A prometheus_client collector: `registry`'s families with every worker's counters and histograms added.

    Meant to be rendered in place of `registry` (create_metrics_app's `backend_collector`), never registered
    into it: it would then collect itself. Updated and collected on the primary's event loop.
    """

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry
        self._by_worker: dict[int, list[MetricFamilySnapshot]] = {}

    def update(self, worker_id: int, snapshots: list[MetricFamilySnapshot]) -> None:
        """Replace what `worker_id` contributes with its latest snapshot (totals, not increments)."""
        self._by_worker[worker_id] = snapshots

    def forget(self, worker_id: int) -> None:
        """Drop a worker's share (it exited); its series then read lower, which Prometheus takes for a reset."""
        self._by_worker.pop(worker_id, None)

    def collect(self) -> Iterator[Metric]:
        shares = self._worker_totals()
        # Only the primary's families take workers' samples; a family it lacks is left out rather than rendered
        # from the snapshots: /metrics concatenates several registries, and the same name coming from another of
        # them would make the family appear twice, which fails the whole scrape. Workers and primary run the
        # same code, so such a family only comes from a module the primary never imported.
        for family in self._registry.collect():
            share = shares.get((family.name, family.type))
            yield _with_share(family, share) if share and family.type in _SUMMED_TYPES else family

    def _worker_totals(self) -> dict[tuple[str, str], dict[_SampleKey, float]]:
        """Per (family name, type): every worker's value of each sample, summed."""
        totals: dict[tuple[str, str], dict[_SampleKey, float]] = {}
        for snapshots in list(self._by_worker.values()):
            for family in snapshots:
                values = totals.setdefault((family.name, family.type), {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    values[key] = values.get(key, 0.0) + sample.value
        return totals


def _with_share(family: Metric, share: dict[_SampleKey, float]) -> Metric:
    """A copy of `family` (a registry may hand out the same object twice) with the workers' values added; their
    series the primary has not seen (a model version served only by workers so far) come after its own."""
    merged = Metric(family.name, family.documentation, family.type, family.unit)
    left = dict(share)
    for sample in family.samples:
        added = left.pop((sample.name, tuple(sorted(sample.labels.items()))), 0.0)
        merged.samples.append(sample._replace(value=sample.value + added) if added else sample)
    merged.samples.extend(Sample(name, dict(labels), value) for (name, labels), value in left.items())
    return merged
