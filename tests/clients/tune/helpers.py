"""Measurements made up for the tests of the choosing rule, the refinement step and the outputs."""

from __future__ import annotations

from modelgate.clients.tune.candidate import make_candidate
from modelgate.clients.tune.measurement import Measurement, from_summary, not_served

BASE = {"max_num_seqs": "16", "max_num_batched_tokens": "256", "block_size": "16"}


def measured(tok_s: float, ttft_ms: float, itl_ms: float | None, num_errors: int = 0, **overrides) -> Measurement:
    """A served candidate with these figures (p50 = p99 for brevity)."""
    candidate = make_candidate(BASE, {k: str(v) for k, v in overrides.items()})
    itl = None if itl_ms is None else {"p50": itl_ms / 1e3, "p99": itl_ms / 1e3}
    summary = {
        "errors": ["boom"] if num_errors else [],
        "num_ok": 10,
        "num_errors": num_errors,
        "output_token_throughput_per_s": tok_s,
        "request_throughput_per_s": tok_s / 10,
        "ttft_s": {"p50": ttft_ms / 1e3, "p99": ttft_ms / 1e3},
        "itl_s": itl,
    }
    return from_summary("run", candidate, "baseline" if candidate.is_baseline else "coarse", summary, 1.0)


def failed(**overrides) -> Measurement:
    candidate = make_candidate(BASE, {k: str(v) for k, v in overrides.items()})
    return not_served("run", candidate, "coarse", "the model did not load", 1.0)
