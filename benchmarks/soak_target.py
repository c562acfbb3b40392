"""The server a soak sends to, and what it says about its own health: event-loop lag (from its /metrics) and
resident memory (from /proc).

Shared by the soak (benchmarks/soak.py, a `modelgate serve` process) and the tests that run the same traffic
(tests/server/test_soak.py, test_hostile_interleaved.py).
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from modelgate.server.settings import DEFAULT_HTTP_MAX_INPUT_SIZE

WAIT_S = 60  # the bound of every client wait: a stalled server fails a request rather than hanging the soak
LAG = "modelgate_event_loop_lag_seconds"
LAG_MAX = "modelgate_event_loop_lag_max_seconds"
STALL_S = 0.5  # a bucket bound of LAG: a probe this late means the loop was held for at least this long
# Once the traffic stops, the engine must be idle within this: every request whose client left was cancelled
# (256 prompts of 128 tokens each, were it not, keep a CPU engine busy for minutes).
IDLE_WAIT_S = 30.0


@dataclass(frozen=True)
class Target:
    """A running server: `http_url` and `grpc_url` as "host:port", what it serves, its body limit."""

    http_url: str
    grpc_url: str
    metrics_url: str
    llm_model: str = "tiny_llm"
    has_ensemble: bool = False  # ensemble_add_sub_scale (with add_batch_dim and batched_scale) is served
    max_input_size: int = DEFAULT_HTTP_MAX_INPUT_SIZE  # its --http-max-input-size


@dataclass(frozen=True)
class LoopLag:
    """The loop-lag figures of /metrics at one moment."""

    max_s: float  # the largest lag since the server started serving
    num_probes: int  # probes run so far
    num_stalls: int  # of those, probes that ran the stall bound (`loop_lag`'s `stall_s`) or more late

    def stalls_since(self, earlier: LoopLag) -> int:
        return self.num_stalls - earlier.num_stalls


def loop_lag(metrics_url: str, stall_s: float = STALL_S) -> LoopLag:
    """The figures now; `stall_s` must be a bucket bound of the histogram (server_metrics.py)."""
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(_get(metrics_url))
        if family.name in (LAG, LAG_MAX)
        for sample in family.samples
    }
    num_probes = samples[(f"{LAG}_count", None)]
    on_time = samples[(f"{LAG}_bucket", _bucket_label(stall_s))]
    return LoopLag(samples[(LAG_MAX, None)], int(num_probes), int(num_probes - on_time))


def num_llm_requests(metrics_url: str, model: str) -> int:
    """Requests the LLM engine runs or keeps waiting (its gauges on /metrics), all versions."""
    names = ("modelgate_llm_num_requests_running", "modelgate_llm_num_requests_waiting")
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(_get(metrics_url))
            if family.name in names
            for sample in family.samples
            if sample.labels.get("model") == model
        )
    )


def seconds_until_llm_idle(target: Target, within_s: float = IDLE_WAIT_S) -> float | None:
    """How long the engine took to hold no request once nobody waits for one; None if not within `within_s`."""
    started = time.monotonic()
    while (waited := time.monotonic() - started) <= within_s:
        if num_llm_requests(target.metrics_url, target.llm_model) == 0:
            return waited
        time.sleep(0.1)
    return None


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (VmRSS of /proc/PID/status) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def _bucket_label(bound: float) -> str:
    """How prometheus_client writes a bucket's `le` label (0.5 -> "0.5", 1 -> "1.0")."""
    return repr(float(bound))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:
        return response.read().decode()
