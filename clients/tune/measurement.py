"""What one candidate measured: a line of tune_log.jsonl, a row of the table, a point of the plot.

`served` is false when the server did not bring the model up with these settings (`error` says why); such a
candidate stays in the log, so a rerun does not try it again, and is never chosen.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelgate.clients.tune.candidate import Candidate

Phase = Literal["baseline", "coarse", "refine"]


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str  # fingerprint of the model, device and traffic the numbers belong to (tune_log.RunFingerprint)
    key: str  # Candidate.key
    id: str  # Candidate.id
    phase: Phase
    refine_round: int = Field(0, ge=0)  # 1..: the refinement round that proposed it; 0: baseline and coarse
    overrides: dict[str, str]
    settings: dict[str, str]
    served: bool
    error: str | None = None
    num_ok: int = Field(0, ge=0)
    num_errors: int = Field(0, ge=0)
    output_tok_s: float = 0.0
    request_per_s: float = 0.0
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p99_ms: float | None = None  # None: no request had a second token
    wall_s: float = 0.0  # serving and measuring, the server's start and stop included
    measured_at: float = Field(default_factory=time.time)

    @property
    def has_numbers(self) -> bool:
        """Served, and at least one request completed: the latencies mean something."""
        return self.served and self.num_ok > 0

    @property
    def label(self) -> str:
        return " ".join(f"{name}={value}" for name, value in sorted(self.overrides.items())) or "the model's config"


def from_summary(
    run: str, candidate: Candidate, phase: Phase, summary: dict, wall_s: float, refine_round: int = 0
) -> Measurement:
    """The measurement of a bench run (`LLMBenchResult.summary`)."""
    return Measurement(
        **_identity(run, candidate, phase, refine_round),
        served=True,
        error="; ".join(summary["errors"]) or None,
        num_ok=summary["num_ok"],
        num_errors=summary["num_errors"],
        output_tok_s=summary["output_token_throughput_per_s"],
        request_per_s=summary["request_throughput_per_s"],
        ttft_p50_ms=_ms(summary["ttft_s"], "p50"),
        ttft_p99_ms=_ms(summary["ttft_s"], "p99"),
        itl_p50_ms=_ms(summary["itl_s"], "p50"),
        itl_p99_ms=_ms(summary["itl_s"], "p99"),
        wall_s=wall_s,
    )


def not_served(
    run: str, candidate: Candidate, phase: Phase, error: str, wall_s: float, refine_round: int = 0
) -> Measurement:
    return Measurement(**_identity(run, candidate, phase, refine_round), served=False, error=error, wall_s=wall_s)


def _identity(run: str, candidate: Candidate, phase: Phase, refine_round: int) -> dict:
    return {
        "run": run,
        "key": candidate.key,
        "id": candidate.id,
        "phase": phase,
        "refine_round": refine_round,
        "overrides": dict(candidate.overrides),
        "settings": dict(candidate.settings),
    }


def _ms(distribution: dict | None, quantile: str) -> float | None:
    return None if distribution is None else distribution[quantile] * 1e3
