"""What one benchmark request measured, and the timeline of token chunks it is computed from.

Times are seconds from the moment the request was sent (time.perf_counter). A chunk is one
streamed response that carried output tokens. The first chunk gives the time to first token
(TTFT); each later chunk's gap to the one before is spread evenly over its tokens, which gives
one inter-token latency (ITL) per token at its position in the output (0 is the first token,
so ITL positions start at 1; extra tokens of the first chunk have no gap of their own). The
last chunk gives the time to completion (TTC); e2e adds the end of the stream after it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from modelgate.clients.bench.prompt import Prompt


@dataclass
class RequestRecord:
    index: int
    pattern: str
    protocol: str
    started_at: float  # unix time the request was sent
    start_s: float = 0.0  # from the start of the measured run
    planned_isl: int = 0
    planned_osl: int = 0
    isl: int | None = None  # as the server counted it when it said, else the planned one
    osl: int = 0
    ttft_s: float | None = None
    ttc_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    itl_positions: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    prompt: Prompt | None = field(default=None, repr=False)  # kept only to save the prompts; not reported

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (TTC - TTFT) / (OSL - 1)."""
        if self.ttft_s is None or self.ttc_s is None or self.osl < 2:
            return None
        return (self.ttc_s - self.ttft_s) / (self.osl - 1)

    def as_dict(self) -> dict:
        row = asdict(self)
        del row["prompt"]
        row["tpot_s"] = self.tpot_s
        return row


class TokenTimeline:
    """Chunks as they arrive: (seconds since send, tokens or None when the chunk did not say)."""

    def __init__(self):
        self.chunks: list[tuple[float, int | None]] = []

    def add(self, elapsed_s: float, num_tokens: int | None) -> None:
        if num_tokens is None or num_tokens > 0:
            self.chunks.append((elapsed_s, num_tokens))

    def fill_record(self, record: RequestRecord, total_tokens: int | None) -> None:
        """Set TTFT, ITLs, TTC and OSL; chunks without a count share what `total_tokens` leaves."""
        counts = _resolved_counts([n for _, n in self.chunks], total_tokens)
        timed = [(t, n) for (t, _), n in zip(self.chunks, counts) if n > 0]
        record.osl = sum(counts)
        if not timed:
            return
        record.ttft_s, record.ttc_s = timed[0][0], timed[-1][0]
        position, previous = timed[0][1], timed[0][0]
        for elapsed, count in timed[1:]:
            gap = (elapsed - previous) / count
            record.itl_s.extend([gap] * count)
            record.itl_positions.extend(range(position, position + count))
            position, previous = position + count, elapsed


def _resolved_counts(counts: list[int | None], total: int | None) -> list[int]:
    """Unknown counts: an even share of what the known ones leave of `total` (1 each without a total).

    What does not divide evenly goes one token each to the latest chunks (a server's first chunk
    is the prefill's single token), so the counts sum to `total`.
    """
    unknown = [i for i, n in enumerate(counts) if n is None]
    resolved = [n or 0 for n in counts]
    if not unknown:
        return resolved
    left = len(unknown) if total is None else max(0, total - sum(resolved))
    base, extra = divmod(left, len(unknown))
    for rank, i in enumerate(unknown):
        resolved[i] = base + (1 if rank >= len(unknown) - extra else 0)
    return resolved
