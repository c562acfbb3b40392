"""The time budget of one `modelgate tune` invocation (a resumed run gets a budget of its own).

A candidate starts only when the time it is expected to take (the longest one measured so far, plus a fifth)
still fits the phase's share of the budget; one that is running when the whole budget is spent is stopped and left out of the
log, so a resumed run measures it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_MARGIN = 1.2  # candidates vary; one cut off at the deadline is time spent for nothing


class Budget:
    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic):
        self.total_s = total_s
        self.clock = clock
        self.started = clock()
        self.longest_candidate_s: float | None = None

    @property
    def deadline(self) -> float:
        """The end of the budget on `clock`'s scale."""
        return self.started + self.total_s

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def remaining_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s())

    def can_start(self, share: float = 1.0) -> bool:
        """Whether a candidate is expected to finish within `share` of the budget."""
        expected = (self.longest_candidate_s or 0.0) * _MARGIN
        return self.remaining_s() > 0 and self.elapsed_s() + expected <= self.total_s * share

    def record(self, candidate_s: float) -> None:
        self.longest_candidate_s = max(self.longest_candidate_s or 0.0, candidate_s)
