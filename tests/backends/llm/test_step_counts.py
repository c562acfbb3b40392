"""StepCounts: each step's kind, time and tokens, as the engine's metrics and benchmarks read them."""

import pytest

from modelgate.backends.llm.engine import LLMEngine
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import ScheduledRequest, SchedulerOutput
from modelgate.backends.llm.step_counts import StepCounts
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint


class _Request:
    """What ScheduledRequest reads of a request to know whether the step samples it."""

    def __init__(self, num_tokens: int):
        self.num_tokens = num_tokens


def _step(*new_tokens: int) -> SchedulerOutput:
    scheduled = [ScheduledRequest(_Request(100), 100 - n, n, []) for n in new_tokens]
    return SchedulerOutput(scheduled)


def _counted(counts: StepCounts, step: SchedulerOutput, started_at: float, done_at: float) -> None:
    counts.finished(step, counts.count(step), started_at, done_at)


def test_each_kind_gets_its_steps_time_and_tokens():
    counts = StepCounts()
    _counted(counts, _step(30, 1), 0.0, 1.0)  # prompt tokens beside a decode: a prefill step
    _counted(counts, _step(1, 1), 1.0, 1.25)
    _counted(counts, _step(1, 1, 1), 1.25, 1.75)
    assert (counts.steps, counts.decode_steps) == (3, 2)
    assert counts.prefill_seconds == pytest.approx(1.0) and counts.prefill_tokens == 31
    assert counts.decode_seconds == pytest.approx(0.75) and counts.decode_tokens == 5


def test_a_step_queued_ahead_counts_from_the_return_of_the_one_before_it():
    counts = StepCounts()
    _counted(counts, _step(1, 1), 0.0, 0.5)
    _counted(counts, _step(1, 1), 0.1, 0.9)  # scheduled while the first ran: its GPU time is 0.4 s
    assert counts.decode_seconds == pytest.approx(0.9)


def test_the_engine_idle_between_steps_counts_none_of_its_wait():
    counts = StepCounts()
    _counted(counts, _step(8), 0.0, 0.25)
    _counted(counts, _step(1), 5.0, 5.5)  # scheduled 4.75 s after the first returned: no request came before
    assert counts.prefill_seconds == pytest.approx(0.25) and counts.decode_seconds == pytest.approx(0.5)


def test_since_and_copy_cover_the_times_and_tokens():
    counts = StepCounts()
    _counted(counts, _step(8), 0.0, 0.25)
    earlier = counts.copy()
    _counted(counts, _step(1, 1), 0.25, 0.5)
    _counted(counts, _step(4, 1), 0.5, 1.5)
    later = counts.since(earlier)
    assert (later.steps, later.decode_steps) == (2, 1)
    assert (later.decode_tokens, later.prefill_tokens) == (2, 5)
    assert later.decode_seconds == pytest.approx(0.25) and later.prefill_seconds == pytest.approx(1.0)
    assert earlier.prefill_tokens == 8 and earlier.decode_tokens == 0  # a copy: later steps leave it alone
    assert "decode steps 0.25 s, 250.00 ms and 2 tokens each" in str(later)
    assert "prefill steps 1.00 s, 1000.00 ms and 5 tokens each" in str(later)


def test_an_engines_stats_carry_its_steps_tokens_by_kind(tmp_path):
    engine = LLMEngine(
        make_tiny_checkpoint(tmp_path),
        EngineConfig(device="cpu", num_kv_blocks=64, block_size=4, max_model_len=256, show_progress=False),
    )
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    for index, prompt in enumerate(prompts):
        engine.add_request(f"r{index}", prompt, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    while engine.has_unfinished:
        engine.step()
    stats = engine.stats()
    # One step computes both prompts (and samples each one's first token); three decode steps of both follow.
    assert (stats.num_steps, stats.num_decode_steps) == (4, 3)
    assert stats.prefill_step_tokens == 8 and stats.decode_step_tokens == 6
    assert stats.prefill_step_seconds > 0 and stats.decode_step_seconds > 0
