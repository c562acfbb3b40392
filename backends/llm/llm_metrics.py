"""Prometheus metrics of LLM serving, per model and version, in the server's backend registry.

Latencies are measured in the server process, where responses leave: time to first token
and inter-token latency as a client sees them (engine queue time comes from the engine).
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

from modelgate.backends.llm.engine_messages import EngineStats
from modelgate.core.backend_metrics import BACKEND_METRICS

_LABELS = ("model", "version")
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)


def _histogram(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, _LABELS, buckets=_LATENCY_BUCKETS, registry=BACKEND_METRICS)


TIME_TO_FIRST_TOKEN = _histogram("modelgate_llm_time_to_first_token_seconds", "Time from request to its first token")
INTER_TOKEN_LATENCY = _histogram("modelgate_llm_inter_token_latency_seconds", "Time between a request's tokens")
END_TO_END_LATENCY = _histogram("modelgate_llm_e2e_request_latency_seconds", "Time from request to its last token")
QUEUE_TIME = _histogram("modelgate_llm_queue_time_seconds", "Time a request waited in the engine before its first step")
PROMPT_TOKENS = Counter(
    "modelgate_llm_prompt_tokens", "Prompt tokens of finished requests", _LABELS, registry=BACKEND_METRICS
)
GENERATION_TOKENS = Counter("modelgate_llm_generation_tokens", "Generated tokens", _LABELS, registry=BACKEND_METRICS)
REQUESTS_RUNNING = Gauge(
    "modelgate_llm_num_requests_running", "Requests in the engine's running batch", _LABELS, registry=BACKEND_METRICS
)
REQUESTS_WAITING = Gauge(
    "modelgate_llm_num_requests_waiting", "Requests waiting for the engine", _LABELS, registry=BACKEND_METRICS
)
KV_CACHE_USAGE = Gauge(
    "modelgate_llm_kv_cache_usage_ratio", "Fraction of KV cache blocks in use", _LABELS, registry=BACKEND_METRICS
)
PREEMPTIONS = Gauge(
    "modelgate_llm_num_preemptions", "Cumulative preemptions of the engine", _LABELS, registry=BACKEND_METRICS
)
PREFIX_CACHE_QUERIES = Gauge(
    "modelgate_llm_prefix_cache_queries",
    "Cumulative prompt tokens looked up in the prefix cache",
    _LABELS,
    registry=BACKEND_METRICS,
)
PREFIX_CACHE_HITS = Gauge(
    "modelgate_llm_prefix_cache_hits",
    "Cumulative prompt tokens found in the prefix cache",
    _LABELS,
    registry=BACKEND_METRICS,
)
PREFIX_CACHE_HIT_RATE = Gauge(
    "modelgate_llm_prefix_cache_hit_rate", "Prefix cache hits / queries", _LABELS, registry=BACKEND_METRICS
)
ENGINE_STEPS = Gauge("modelgate_llm_engine_steps", "Cumulative engine steps", _LABELS, registry=BACKEND_METRICS)
ENGINE_DECODE_STEPS = Gauge(
    "modelgate_llm_engine_decode_steps",
    "Cumulative engine steps of one new token per request",
    _LABELS,
    registry=BACKEND_METRICS,
)
ENGINE_STEPS_LAUNCHED_AHEAD = Gauge(
    "modelgate_llm_engine_steps_launched_ahead",
    "Cumulative decode steps queued on the GPU before the previous step's tokens reached the host",
    _LABELS,
    registry=BACKEND_METRICS,
)
ENGINE_DECODE_STEP_SECONDS = Gauge(
    "modelgate_llm_engine_decode_step_seconds",
    "Cumulative seconds of the engine's decode steps, from each step's start (its scheduling, or the previous "
    "step's return if later) to the return of its tokens",
    _LABELS,
    registry=BACKEND_METRICS,
)
ENGINE_DECODE_STEP_TOKENS = Gauge(
    "modelgate_llm_engine_decode_step_tokens",
    "Cumulative tokens of the engine's decode steps (their batch sizes)",
    _LABELS,
    registry=BACKEND_METRICS,
)
ENGINE_PREFILL_STEP_SECONDS = Gauge(
    "modelgate_llm_engine_prefill_step_seconds",
    "Cumulative seconds of the engine's steps with prompt tokens (with or without decodes), timed as decode steps",
    _LABELS,
    registry=BACKEND_METRICS,
)
ENGINE_PREFILL_STEP_TOKENS = Gauge(
    "modelgate_llm_engine_prefill_step_tokens",
    "Cumulative tokens of the engine's steps with prompt tokens, their decodes included",
    _LABELS,
    registry=BACKEND_METRICS,
)
ENGINE_RESTARTS = Counter(
    "modelgate_llm_engine_restarts",
    "LLM engine processes started again after one stopped while its model was loaded",
    _LABELS,
    registry=BACKEND_METRICS,
)


class VersionSeries:
    """One model version's series, looked up once: `Metric.labels()` per token cost the event loop ~9% of its
    time when streaming (a lock and a dict lookup per call), and the engine's gauges per step as much again
    with a small model's many short steps."""

    def __init__(self, labels: tuple[str, str]):
        self.time_to_first_token = TIME_TO_FIRST_TOKEN.labels(*labels)
        self.inter_token_latency = INTER_TOKEN_LATENCY.labels(*labels)
        self.end_to_end_latency = END_TO_END_LATENCY.labels(*labels)
        self.queue_time = QUEUE_TIME.labels(*labels)
        self.prompt_tokens = PROMPT_TOKENS.labels(*labels)
        self.generation_tokens = GENERATION_TOKENS.labels(*labels)
        self.requests_running = REQUESTS_RUNNING.labels(*labels)
        self.requests_waiting = REQUESTS_WAITING.labels(*labels)
        self.kv_cache_usage = KV_CACHE_USAGE.labels(*labels)
        self.preemptions = PREEMPTIONS.labels(*labels)
        self.prefix_cache_queries = PREFIX_CACHE_QUERIES.labels(*labels)
        self.prefix_cache_hits = PREFIX_CACHE_HITS.labels(*labels)
        self.prefix_cache_hit_rate = PREFIX_CACHE_HIT_RATE.labels(*labels)
        self.steps = ENGINE_STEPS.labels(*labels)
        self.decode_steps = ENGINE_DECODE_STEPS.labels(*labels)
        self.steps_launched_ahead = ENGINE_STEPS_LAUNCHED_AHEAD.labels(*labels)
        self.decode_step_seconds = ENGINE_DECODE_STEP_SECONDS.labels(*labels)
        self.decode_step_tokens = ENGINE_DECODE_STEP_TOKENS.labels(*labels)
        self.prefill_step_seconds = ENGINE_PREFILL_STEP_SECONDS.labels(*labels)
        self.prefill_step_tokens = ENGINE_PREFILL_STEP_TOKENS.labels(*labels)

    def record_engine_stats(self, stats: EngineStats) -> None:
        self.requests_running.set(stats.num_running)
        self.requests_waiting.set(stats.num_waiting)
        self.kv_cache_usage.set(stats.kv_cache_usage)
        self.preemptions.set(stats.num_preemptions)
        self.prefix_cache_queries.set(stats.prefix_cache_queries)
        self.prefix_cache_hits.set(stats.prefix_cache_hits)
        self.steps.set(stats.num_steps)
        self.decode_steps.set(stats.num_decode_steps)
        self.steps_launched_ahead.set(stats.num_steps_launched_ahead)
        self.decode_step_seconds.set(stats.decode_step_seconds)
        self.decode_step_tokens.set(stats.decode_step_tokens)
        self.prefill_step_seconds.set(stats.prefill_step_seconds)
        self.prefill_step_tokens.set(stats.prefill_step_tokens)
        queries = stats.prefix_cache_queries
        self.prefix_cache_hit_rate.set(stats.prefix_cache_hits / queries if queries else 0.0)

    def record_engine_down(self) -> None:
        """A dead engine runs nothing and holds no KV cache (its requests were failed)."""
        self.requests_running.set(0)
        self.requests_waiting.set(0)
        self.kv_cache_usage.set(0)


_USERS: dict[tuple[str, str], int] = {}  # instances using each version's series (a reload overlaps two)
_USERS_LOCK = threading.Lock()


def publish_zeros(labels: tuple[str, str]) -> None:
    """Create a model version's series at load, so dashboards see zeros rather than nothing."""
    with _USERS_LOCK:
        _USERS[labels] = _USERS.get(labels, 0) + 1
    for metric in _all_metrics():
        metric.labels(*labels)


def forget(labels: tuple[str, str]) -> None:
    """Drop a model version's series when its last instance unloads (the instance of a reload that replaced it
    keeps the same series, and holds them: VersionSeries)."""
    with _USERS_LOCK:
        left = _USERS.get(labels, 1) - 1
        if left > 0:
            _USERS[labels] = left
            return
        _USERS.pop(labels, None)
    for metric in _all_metrics():
        try:
            metric.remove(*labels)
        except KeyError:
            pass


def _all_metrics():
    return (
        TIME_TO_FIRST_TOKEN,
        INTER_TOKEN_LATENCY,
        END_TO_END_LATENCY,
        QUEUE_TIME,
        PROMPT_TOKENS,
        GENERATION_TOKENS,
        REQUESTS_RUNNING,
        REQUESTS_WAITING,
        KV_CACHE_USAGE,
        PREEMPTIONS,
        PREFIX_CACHE_QUERIES,
        PREFIX_CACHE_HITS,
        PREFIX_CACHE_HIT_RATE,
        ENGINE_STEPS,
        ENGINE_DECODE_STEPS,
        ENGINE_STEPS_LAUNCHED_AHEAD,
        ENGINE_DECODE_STEP_SECONDS,
        ENGINE_DECODE_STEP_TOKENS,
        ENGINE_PREFILL_STEP_SECONDS,
        ENGINE_PREFILL_STEP_TOKENS,
        ENGINE_RESTARTS,
    )
