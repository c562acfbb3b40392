"""The benchmark summary: throughput, and mean/p50/p90/p99 of every latency, from request records.

Percentiles interpolate linearly between order statistics (numpy's default, as vLLM's and
genai-perf's reports do). ITL is pooled over every token of every successful request, so long
outputs weigh by their tokens; TPOT is one value per request. Throughputs divide by the run's
duration: from the first measured launch to the last measured request's end.
"""

from __future__ import annotations

import numpy as np

from modelgate.clients.bench.request_record import RequestRecord

QUANTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft_s", "itl_s", "tpot_s", "ttc_s", "e2e_s")


def distribution(values) -> dict | None:
    """count, mean, min, max and p50/p90/p99 of `values`; None when there are none."""
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if array.size == 0:
        return None
    result = {
        "count": int(array.size),
        "mean": float(array.mean()),
        "min": float(array.min()),
        "max": float(array.max()),
    }
    for q, value in zip(QUANTILES, np.percentile(array, QUANTILES)):
        result[f"p{q}"] = float(value)
    return result


def run_duration_s(records: list[RequestRecord]) -> float:
    ends = [r.start_s + r.e2e_s for r in records if r.e2e_s is not None]
    return max(ends, default=0.0)


def least_squares_line(xs, ys) -> dict | None:
    """y = intercept + slope * x; None with fewer than two distinct x values."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.size < 2 or np.unique(x).size < 2:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return {"slope": float(slope), "intercept": float(intercept)}


def summarize(records: list[RequestRecord]) -> dict:
    ok = [r for r in records if r.ok]
    duration = run_duration_s(records)
    input_tokens = sum(r.isl or 0 for r in ok)
    output_tokens = sum(r.osl for r in ok)
    summary = {
        "num_requests": len(records),
        "num_ok": len(ok),
        "num_errors": len(records) - len(ok),
        "duration_s": duration,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput_per_s": len(ok) / duration if duration else 0.0,
        "output_token_throughput_per_s": output_tokens / duration if duration else 0.0,
        "input_token_throughput_per_s": input_tokens / duration if duration else 0.0,
    }
    summary.update(_latencies(ok))
    summary["isl"] = distribution(r.isl for r in ok)
    summary["osl"] = distribution(r.osl for r in ok)
    timed = [r for r in ok if r.ttft_s is not None and r.isl is not None]
    summary["ttft_vs_isl_fit"] = least_squares_line([r.isl for r in timed], [r.ttft_s for r in timed])
    summary["per_pattern"] = {
        name: {"num_requests": len(group), **_latencies(group)} for name, group in by_pattern(ok).items()
    }
    summary["errors"] = sorted({r.error for r in records if r.error})[:10]
    return summary


def _latencies(records: list[RequestRecord]) -> dict:
    return {
        "ttft_s": distribution(r.ttft_s for r in records),
        "itl_s": distribution(gap for r in records for gap in r.itl_s),
        "tpot_s": distribution(r.tpot_s for r in records),
        "ttc_s": distribution(r.ttc_s for r in records),
        "e2e_s": distribution(r.e2e_s for r in records),
    }


def by_pattern(records: list[RequestRecord]) -> dict[str, list[RequestRecord]]:
    groups: dict[str, list[RequestRecord]] = {}
    for record in records:
        groups.setdefault(record.pattern, []).append(record)
    return dict(sorted(groups.items()))
