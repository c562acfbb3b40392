"""How an engine's steps ran, counted for metrics: served throughput below the engine's alone is often steps
that could not be queued ahead (a prefill joined, or a request's next token needed the host first), and where
the time went is the split between decode steps and steps with prompt tokens."""

from __future__ import annotations

from dataclasses import dataclass, fields

from modelgate.backends.llm.scheduler import SchedulerOutput
from modelgate.backends.llm.step_layout import is_decode_step


@dataclass
class StepCounts:
    """Cumulative: every step; the decode steps among them (one new token per request); the decode steps
    queued on the GPU before the step before them had returned its tokens (launch_decode_ahead).

    And each kind's time and tokens: a decode step's, and a prefill step's (one with prompt tokens, decodes
    beside them or not). A step's time runs from when it started, its scheduling or the return of the step
    before it, whichever came later, to the return of its tokens to the host. So steps queued back to back count
    their time on the GPU, while an engine idle between requests counts none of its wait. Its tokens are those it
    computed: a decode step's are its batch."""

    steps: int = 0
    decode_steps: int = 0
    launched_ahead: int = 0
    decode_seconds: float = 0.0
    decode_tokens: int = 0
    prefill_seconds: float = 0.0
    prefill_tokens: int = 0

    def __post_init__(self):
        self._last_done: float | None = None  # when the last step's tokens came back (not a count)

    def count(self, output: SchedulerOutput) -> bool:
        """Count a step as it is launched; returns whether it is a decode step (for `finished`)."""
        self.steps += 1
        is_decode = is_decode_step(output.scheduled)
        if is_decode:
            self.decode_steps += 1
        return is_decode

    def finished(self, output: SchedulerOutput, is_decode: bool, started_at: float, done_at: float) -> None:
        """A step's tokens came back at `done_at` (perf_counter seconds); it was scheduled at `started_at`.
        Steps finish in the order they were counted."""
        if self._last_done is not None:
            started_at = max(started_at, self._last_done)
        self._last_done = done_at
        seconds = max(done_at - started_at, 0.0)
        # A decode step's tokens are its batch: no sum over hundreds of requests on the engine's host path.
        tokens = len(output.scheduled) if is_decode else output.num_tokens
        if is_decode:
            self.decode_seconds += seconds
            self.decode_tokens += tokens
        else:
            self.prefill_seconds += seconds
            self.prefill_tokens += tokens

    def copy(self) -> StepCounts:
        return StepCounts(**{field.name: getattr(self, field.name) for field in fields(self)})

    def since(self, earlier: StepCounts) -> StepCounts:
        """The steps counted after `earlier` (a copy of these counts taken before)."""
        return StepCounts(
            **{field.name: getattr(self, field.name) - getattr(earlier, field.name) for field in fields(self)}
        )

    def __str__(self) -> str:
        text = f"steps {self.steps}, decode {self.decode_steps}, launched ahead {self.launched_ahead}"
        prefill_steps = self.steps - self.decode_steps
        for kind, count, seconds, tokens in (
            ("decode", self.decode_steps, self.decode_seconds, self.decode_tokens),
            ("prefill", prefill_steps, self.prefill_seconds, self.prefill_tokens),
        ):
            if count:
                text += f"; {kind} steps {seconds:.2f} s, {1e3 * seconds / count:.2f} ms and {tokens / count:.0f} tokens each"
        return text
