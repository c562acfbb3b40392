"""Workers' counters and histograms, summed into the primary's backend registry, equal observing all in one."""

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelgate.server.frontend_workers.metrics_snapshot import MetricFamilySnapshot, WorkerMetrics, snapshot
from modelgate.server.metrics import create_metrics_app
from modelgate.server.statistics import StatisticsRegistry

LABELS = ("model", "version")
BUCKETS = (0.25, 0.5, 1.0, 2.0)


class Backend:
    """The same metric definitions, in the registry of one process."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram("llm_latency_seconds", "Latency", LABELS, buckets=BUCKETS, registry=self.registry)
        self.tokens = Counter("llm_tokens", "Tokens", LABELS, registry=self.registry)
        self.running = Gauge("llm_running", "Running requests", LABELS, registry=self.registry)

    def serve(self, model: str, latencies: list[float], tokens: int) -> None:
        # Binary fractions: sums come out exact whatever the order of additions.
        for seconds in latencies:
            self.latency.labels(model, "1").observe(seconds)
        self.tokens.labels(model, "1").inc(tokens)


def values(families, types=("counter", "histogram")) -> dict:
    """{(sample name, labels): value} of the given family types, without `_created`."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        if family.type in types
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.fixture
def backends():
    """primary, two workers, and a reference that observes what all three do."""
    primary, first, second, reference = Backend(), Backend(), Backend(), Backend()
    for backend, latencies, tokens in ((primary, [0.125, 3.0], 5), (first, [0.375, 0.75, 1.5], 7), (second, [0.5], 11)):
        backend.serve("a", latencies, tokens)
        reference.serve("a", latencies, tokens)
    return primary, first, second, reference


def test_merged_counters_and_histograms_equal_one_registry_observing_everything(backends):
    primary, first, second, reference = backends
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    merged.update(2, snapshot(second.registry))
    assert values(merged.collect()) == values(reference.registry.collect())
    assert values(merged.collect())[("llm_latency_seconds_count", (("model", "a"), ("version", "1")))] == 6


def test_a_later_snapshot_replaces_the_earlier_one(backends):
    primary, first, _, _ = backends
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    first.serve("a", [0.25], 1)
    merged.update(1, snapshot(first.registry))
    tokens = ("llm_tokens_total", (("model", "a"), ("version", "1")))
    assert values(merged.collect())[tokens] == 5 + 7 + 1  # totals: the first snapshot is not counted again


def test_worker_gauges_are_ignored(backends):
    primary, first, _, _ = backends
    primary.running.labels("a", "1").set(2)
    first.running.labels("a", "1").set(40)
    first.running.labels("b", "1").set(40)
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    assert values(merged.collect(), types=("gauge",)) == {("llm_running", (("model", "a"), ("version", "1"))): 2}


def test_series_the_primary_lacks_are_added_to_its_family(backends):
    primary, first, _, _ = backends
    first.serve("b", [0.375], 3)
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    found = values(merged.collect())
    b = (("model", "b"), ("version", "1"))
    assert found[("llm_tokens_total", b)] == 3
    assert found[("llm_latency_seconds_bucket", (("le", "0.5"), *b))] == 1
    assert found[("llm_latency_seconds_bucket", (("le", "0.25"), *b))] == 0
    [family] = [f for f in merged.collect() if f.name == "llm_latency_seconds"]
    assert [s.labels["model"] for s in family.samples if s.name.endswith("_count")] == ["a", "b"]


def test_families_unknown_to_the_primary_are_skipped(backends):
    primary, first, _, _ = backends
    Counter("worker_only", "Only in the worker", registry=first.registry).inc(3)
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    assert "worker_only" not in {family.name for family in merged.collect()}


def test_forget_removes_a_workers_share(backends):
    primary, first, second, _ = backends
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    merged.forget(1)
    merged.forget(2)  # never seen: nothing to do
    assert values(merged.collect()) == values(primary.registry.collect())


def test_snapshot_keeps_counters_and_histograms_without_created(backends):
    _, first, _, _ = backends
    first.running.labels("a", "1").set(1)
    families = snapshot(first.registry)
    assert {(f.name, f.type) for f in families} == {("llm_latency_seconds", "histogram"), ("llm_tokens", "counter")}
    names = {s.name for f in families for s in f.samples}
    assert names == {
        "llm_latency_seconds_bucket",
        "llm_latency_seconds_count",
        "llm_latency_seconds_sum",
        "llm_tokens_total",
    }


def test_snapshots_survive_a_msgpack_round_trip(backends):
    primary, first, _, _ = backends
    families = snapshot(first.registry)
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(families), type=list[MetricFamilySnapshot])
    assert decoded == families
    merged = WorkerMetrics(primary.registry)
    merged.update(1, decoded)
    direct = WorkerMetrics(primary.registry)
    direct.update(1, families)
    assert values(merged.collect()) == values(direct.collect())


async def test_metrics_app_renders_the_given_backend_collector(backends):
    primary, first, _, _ = backends
    merged = WorkerMetrics(primary.registry)
    merged.update(1, snapshot(first.registry))
    app = create_metrics_app(StatisticsRegistry(), backend_collector=merged)
    async with TestClient(TestServer(app)) as client:
        text = await (await client.get("/metrics")).text()
    assert 'llm_tokens_total{model="a",version="1"} 12.0' in text
    assert 'llm_latency_seconds_count{model="a",version="1"} 5.0' in text
    assert text.count("# TYPE llm_tokens counter") == 1
