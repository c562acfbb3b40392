"""How an engine's steps ran, counted for metrics: served throughput below the engine's alone is often steps
that could not be queued ahead (a prefill joined, or a request's next token needed the host first)."""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.backends.llm.scheduler import SchedulerOutput
from modelgate.backends.llm.step_layout import is_decode_step


@dataclass
class StepCounts:
    """Cumulative: every step; the decode steps among them (one new token per request); the decode steps
    queued on the GPU before the step before them had returned its tokens (launch_decode_ahead)."""

    steps: int = 0
    decode_steps: int = 0
    launched_ahead: int = 0

    def count(self, output: SchedulerOutput) -> None:
        self.steps += 1
        if is_decode_step(output.scheduled):
            self.decode_steps += 1

    def copy(self) -> StepCounts:
        return StepCounts(self.steps, self.decode_steps, self.launched_ahead)

    def since(self, earlier: StepCounts) -> StepCounts:
        """The steps counted after `earlier` (a copy of these counts taken before)."""
        return StepCounts(
            self.steps - earlier.steps,
            self.decode_steps - earlier.decode_steps,
            self.launched_ahead - earlier.launched_ahead,
        )

    def __str__(self) -> str:
        return f"steps {self.steps}, decode {self.decode_steps}, launched ahead {self.launched_ahead}"
