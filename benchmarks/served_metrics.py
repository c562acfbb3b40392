"""What llm_served_vs_engine.py reads from the server's metrics around a run: per-request means of the server's
own latencies, and how the engine's steps ran (their kinds, times and tokens)."""

from __future__ import annotations

import requests

# The server's own view, per request: time to its first token (as the server sends it, whether or not its text
# is held back) and the engine's queue time. Means over the run, from the histograms' sums and counts.
SERVER_LATENCIES = ("modelgate_llm_time_to_first_token_seconds", "modelgate_llm_queue_time_seconds")
# How the engine's steps ran (cumulative gauges): a served run whose decode steps were not queued ahead left
# the GPU waiting for the host between them.
STEP_GAUGES = (
    "modelgate_llm_engine_steps",
    "modelgate_llm_engine_decode_steps",
    "modelgate_llm_engine_steps_launched_ahead",
    "modelgate_llm_engine_decode_step_seconds",
    "modelgate_llm_engine_decode_step_tokens",
    "modelgate_llm_engine_prefill_step_seconds",
    "modelgate_llm_engine_prefill_step_tokens",
)


def server_latency_sums(metrics_port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text
    sums: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        is_latency = name.endswith(("_sum", "_count")) and name.rsplit("_", 1)[0] in SERVER_LATENCIES
        if is_latency or name in STEP_GAUGES:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def server_latency_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    means = {}
    for name in SERVER_LATENCIES:
        count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        means[name] = total / count if count else None
    for name in STEP_GAUGES:
        means[name] = after.get(name, 0.0) - before.get(name, 0.0)
    return means


def ms_cell(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.1f}"


def step_cells(deltas: dict) -> list[str]:
    """The run's engine steps, the decode / launched-ahead ones as shares of them, and each kind's mean time and
    tokens (a decode step's tokens are its batch; a prefill step's, its prompt tokens and decodes)."""
    steps, decode, ahead, decode_s, decode_tokens, prefill_s, prefill_tokens = (deltas.get(n, 0.0) for n in STEP_GAUGES)
    if not steps:
        return [""] * 5
    kinds = [(decode, decode_s, decode_tokens), (steps - decode, prefill_s, prefill_tokens)]
    means = [f"{1e3 * s / n:.2f} @ {t / n:.0f}" if n else "" for n, s, t in kinds]
    return [f"{steps:.0f}", f"{decode / steps:.0%}", f"{ahead / steps:.0%}", *means]
