"""Engine settings from measured traffic, per time-of-day window. The rules:

1. Lengths: the q-quantile (default p99) by nearest rank: the smallest length that at least a
   fraction q of the requests do not exceed, so the limits cover q of the traffic.
2. max_model_len = max_input_len + max_output_len (their q-quantiles), rounded up to whole KV blocks.
3. Concurrency by Little's law: L = arrival rate x mean time to completion. The rate is the
   window's requests over the seconds of that window the trace covers (between its first and last
   timestamp, on every day it spans); the time to completion is the trace's ttc_s.
4. max_num_seqs: with Poisson arrivals and an engine that keeps up (an M/G/infinity queue), the
   number of requests in flight is Poisson distributed with mean L; take its q-quantile (at least 1).
5. max_num_batched_tokens = max_input_len + max_num_seqs - 1: one step can prefill a whole
   q-quantile prompt while every other running sequence decodes a token.
6. KV cache: max_num_seqs sequences of max_model_len tokens held at once without preemption:
   kv_tokens = max_num_seqs x max_model_len, times clients/size/memory.py's KV bytes per token.
7. Per GPU (given a config.json): memory.plan() gives how many sequences of max_input_len +
   max_output_len tokens fit next to the weights; GPUs (replicas) needed = ceil(max_num_seqs / that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelgate.clients.size.checkpoint_shape import CheckpointShape
from modelgate.clients.size.memory import kv_bytes_per_token, plan
from modelgate.clients.size.traffic_input import TrafficRequest

DAY_S = 86400


@dataclass(frozen=True)
class GpuSpec:
    config: CheckpointShape
    memory_bytes: int
    utilization: float = 0.9
    weights_dtype: str = "bf16"
    kv_dtype: str = "bf16"


@dataclass(frozen=True)
class LengthSummary:
    count: int
    mean: float
    p50: int
    p90: int
    p99: int
    max: int


@dataclass(frozen=True)
class WindowPlan:
    label: str  # "all" or "HH:MM-HH:MM"
    num_requests: int
    max_input_len: int
    max_output_len: int
    max_model_len: int
    max_num_batched_tokens: int | None  # None where the concurrency is unknown
    covered_s: float | None = None
    arrival_rate_per_s: float | None = None
    mean_ttc_s: float | None = None
    concurrency: float | None = None  # Little's law L
    max_num_seqs: int | None = None
    kv_tokens: int | None = None
    kv_bytes: int | None = None
    sequences_per_gpu: int | None = None
    gpus_needed: int | None = None


def nearest_rank(values: list[int], q: float) -> int:
    """The smallest value v with at least a fraction q of `values` <= v."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summarize_lengths(values: list[int]) -> LengthSummary:
    return LengthSummary(
        len(values),
        sum(values) / len(values),
        nearest_rank(values, 0.5),
        nearest_rank(values, 0.9),
        nearest_rank(values, 0.99),
        max(values),
    )


def poisson_quantile(mean: float, q: float) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Poisson(mean)."""
    k, term = 0, math.exp(-mean)
    total = term
    while total < q and k < 10 * mean + 100:
        k += 1
        term *= mean / k
        total += term
    return k


def plan_windows(
    requests: list[TrafficRequest],
    q: float = 0.99,
    window_s: int = 3600,
    utc_offset_s: int = 0,
    block_size: int = 16,
    gpu: GpuSpec | None = None,
) -> list[WindowPlan]:
    """The whole trace ("all") first, then each time-of-day window that has requests."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} must be in (0, 1]")
    if window_s <= 0 or DAY_S % window_s:
        raise ValueError(f"window of {window_s} s must divide a day ({DAY_S} s)")
    stamps = [r.timestamp + utc_offset_s for r in requests if r.timestamp is not None]
    span = (min(stamps), max(stamps)) if stamps else None
    plans = [_plan("all", requests, span[1] - span[0] if span else None, q, block_size, gpu)]
    if span is None:
        return plans
    buckets: dict[int, list[TrafficRequest]] = {}
    for request in requests:
        if request.timestamp is not None:
            buckets.setdefault(int((request.timestamp + utc_offset_s) % DAY_S // window_s), []).append(request)
    for bucket, members in sorted(buckets.items()):
        covered = _covered_s(bucket * window_s, window_s, *span)
        plans.append(_plan(_label(bucket * window_s, window_s), members, covered, q, block_size, gpu))
    return plans


def _plan(
    label: str, requests: list[TrafficRequest], covered_s: float | None, q: float, block_size: int, gpu: GpuSpec | None
) -> WindowPlan:
    max_in = nearest_rank([r.isl for r in requests], q)
    max_out = nearest_rank([r.osl for r in requests], q)
    model_len = _round_up(max_in + max_out, block_size)
    ttcs = [r.ttc_s for r in requests if r.ttc_s is not None]
    rate = len(requests) / covered_s if covered_s else None
    mean_ttc = sum(ttcs) / len(ttcs) if ttcs else None
    if rate is None or mean_ttc is None:
        return WindowPlan(label, len(requests), max_in, max_out, model_len, None, covered_s, rate, mean_ttc)
    concurrency = rate * mean_ttc
    seqs = max(1, poisson_quantile(concurrency, q))
    kv_tokens = seqs * model_len
    result = dict(
        covered_s=covered_s,
        arrival_rate_per_s=rate,
        mean_ttc_s=mean_ttc,
        concurrency=concurrency,
        max_num_seqs=seqs,
        kv_tokens=kv_tokens,
    )
    if gpu is not None:
        fit = plan(
            gpu.config, gpu.memory_bytes, gpu.utilization, gpu.weights_dtype, gpu.kv_dtype, max_in, max_out, block_size
        )
        result.update(
            kv_bytes=kv_tokens * kv_bytes_per_token(gpu.config, gpu.kv_dtype),
            sequences_per_gpu=fit.concurrent_sequences,
            gpus_needed=math.ceil(seqs / fit.concurrent_sequences) if fit.concurrent_sequences else None,
        )
    return WindowPlan(label, len(requests), max_in, max_out, model_len, max_in + seqs - 1, **result)


def _covered_s(window_start: float, window_s: int, first: float, last: float) -> float:
    """Seconds of this time-of-day window, over every day from `first` to `last`, inside [first, last]."""
    covered = 0.0
    for day in range(int(first // DAY_S), int(last // DAY_S) + 1):
        start = day * DAY_S + window_start
        covered += max(0.0, min(start + window_s, last) - max(start, first))
    return covered


def _label(start_s: int, window_s: int) -> str:
    end = start_s + window_s
    return f"{start_s // 3600:02d}:{start_s % 3600 // 60:02d}-{end // 3600:02d}:{end % 3600 // 60:02d}"


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
