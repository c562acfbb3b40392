"""The choosing rule.

1. A candidate meets the targets when it was served, every measured request succeeded, and its TTFT p99 and ITL
   p99 are at most their targets (a target left out holds for everyone; no ITL at all, every output one token,
   meets an ITL target).
2. Among those that meet them: the highest output tokens/s (ties: the smaller worst ratio, below).
3. When none does: the closest, the smallest worst ratio max(TTFT p99 / its target, ITL p99 / its target),
   candidates without failed requests first (ties: the higher output tokens/s). The choice says it missed.
4. Candidates that were not served, or completed no request, are never chosen; with none left there is no choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from modelgate.clients.tune.measurement import Measurement


class Targets(BaseModel):
    """Latency targets in milliseconds; None: no target on that metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_p99_ms: float | None = Field(None, gt=0.0)
    itl_p99_ms: float | None = Field(None, gt=0.0)

    def describe(self) -> str:
        parts = [
            f"{name} p99 <= {value:g} ms"
            for name, value in (("TTFT", self.ttft_p99_ms), ("ITL", self.itl_p99_ms))
            if value
        ]
        return ", ".join(parts) or "no latency targets"


@dataclass(frozen=True)
class Choice:
    measurement: Measurement
    meets_targets: bool
    reason: str


def worst_ratio(measurement: Measurement, targets: Targets) -> float:
    """The largest measured / target latency ratio (0.0 without targets); <= 1 is within every target."""
    ratios = [0.0]
    if targets.ttft_p99_ms is not None:
        ratios.append((measurement.ttft_p99_ms or 0.0) / targets.ttft_p99_ms)
    if targets.itl_p99_ms is not None:
        ratios.append((measurement.itl_p99_ms or 0.0) / targets.itl_p99_ms)
    return max(ratios)


def meets(measurement: Measurement, targets: Targets) -> bool:
    return measurement.has_numbers and measurement.num_errors == 0 and worst_ratio(measurement, targets) <= 1.0


def choose(measurements: list[Measurement], targets: Targets) -> Choice | None:
    """The candidate the rule above picks; None when no candidate has numbers."""
    meeting = [m for m in measurements if meets(m, targets)]
    if meeting:
        best = max(meeting, key=lambda m: (m.output_tok_s, -worst_ratio(m, targets)))
        return Choice(best, True, f"the highest output throughput of {len(meeting)} meeting {targets.describe()}")
    usable = [m for m in measurements if m.has_numbers]
    if not usable:
        return None
    best = min(usable, key=lambda m: (m.num_errors > 0, worst_ratio(m, targets), -m.output_tok_s))
    return Choice(
        best,
        False,
        f"no candidate meets {targets.describe()}: the closest, at {worst_ratio(best, targets):.2f}x its targets"
        + (f" with {best.num_errors} failed requests" if best.num_errors else ""),
    )
