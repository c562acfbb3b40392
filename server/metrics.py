"""Prometheus metrics with Triton's `nv_inference_*` names, read from the statistics registry."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelgate.core.backend_metrics import BACKEND_METRICS
from modelgate.server.statistics import StatisticsRegistry, VersionStatistics

_NS_PER_US = 1000

# (name, help, value of a VersionStatistics); counters keep Triton's names, without `_total`.
_COUNTERS = [
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds",
        lambda s: (s.success.ns + s.fail.ns) // _NS_PER_US,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
        lambda s: s.queue.ns // _NS_PER_US,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds",
        lambda s: s.compute_input.ns // _NS_PER_US,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer.ns // _NS_PER_US,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds",
        lambda s: s.compute_output.ns // _NS_PER_US,
    ),
]
_FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# Triton's per-model response cache counters: for the versions whose model enables the cache.
_CACHE_COUNTERS = [
    ("nv_cache_num_hits_per_model", "Number of cache hits per model", lambda s: s.cache_hit.count),
    ("nv_cache_num_misses_per_model", "Number of cache misses per model", lambda s: s.cache_miss.count),
    (
        "nv_cache_hit_duration_per_model",
        "Total cache hit duration per model, in microseconds",
        lambda s: s.cache_hit.ns // _NS_PER_US,
    ),
    (
        "nv_cache_miss_duration_per_model",
        "Total cache miss (insertion) duration per model, in microseconds",
        lambda s: s.cache_miss.ns // _NS_PER_US,
    ),
]


class TritonStatisticsCollector:
    """A prometheus_client collector exposing every loaded model version's counters."""

    def __init__(self, stats: StatisticsRegistry):
        self.stats = stats

    def collect(self):
        versions = self.stats.all()
        for name, help_text, value_of in _COUNTERS:
            yield _family(name, help_text, "counter", [(_labels(s), value_of(s)) for s in versions])
        failures = [
            ({"model": s.name, "reason": reason, "version": s.version}, s.failures_by_reason.get(reason, 0))
            for s in versions
            for reason in _FAILURE_REASONS
        ]
        yield _family(
            "nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "counter", failures
        )
        yield _family(
            "modelgate_inference_exec_requests",
            "Requests executed, over all executions (divided by nv_inference_exec_count: requests per batch)",
            "counter",
            [(_labels(s), s.executed_requests) for s in versions],
        )
        yield _family(
            "modelgate_inference_batch_executions",
            "Model executions by batch size (rows)",
            "counter",
            [
                ({**_labels(s), "batch_size": str(size)}, batch.compute_infer.count)
                for s in versions
                for size, batch in sorted(s.batches.items())
            ],
        )
        cached = [s for s in versions if s.uses_response_cache]
        if cached:
            for name, help_text, value_of in _CACHE_COUNTERS:
                yield _family(name, help_text, "counter", [(_labels(s), value_of(s)) for s in cached])
        yield _family(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            "gauge",
            [(_labels(s), s.pending_requests) for s in versions],
        )


def _labels(stats: VersionStatistics) -> dict[str, str]:
    return {"model": stats.name, "version": stats.version}


def _family(name: str, help_text: str, kind: str, samples) -> Metric:
    family = Metric(name, help_text, kind)
    for labels, value in samples:
        family.add_sample(name, labels, value)
    return family


def render_text_format(registry: Collector) -> bytes:
    """Prometheus text format 0.0.4 with counter names exactly as Triton's.

    prometheus_client's own renderer appends `_total` to counter names on the TYPE line;
    Triton's dashboards and users expect `# TYPE nv_inference_count counter`.
    """
    lines = []
    for family in registry.collect():
        lines.append(f"# HELP {family.name} {_escape(family.documentation, quote=False)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            if sample.name.endswith("_created"):  # OpenMetrics only: in this format it would split the family
                continue
            labels = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in sorted(sample.labels.items()))
            lines.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(text: str, quote: bool) -> str:
    escaped = str(text).replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if quote else escaped


def create_metrics_app(
    stats: StatisticsRegistry,
    server_registry: CollectorRegistry | None = None,
    backend_collector: Collector | None = None,
) -> web.Application:
    """/metrics: Triton's families from `stats`, then the server's own (`server_registry`), then the backends'
    (`backend_collector`: BACKEND_METRICS unless given, e.g. with frontend workers' shares added in)."""
    registry = CollectorRegistry()
    registry.register(TritonStatisticsCollector(stats))
    backends = BACKEND_METRICS if backend_collector is None else backend_collector
    registries = [registry, *([server_registry] if server_registry is not None else []), backends]

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=b"".join(render_text_format(r) for r in registries))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
