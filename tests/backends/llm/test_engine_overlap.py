"""Output processing overlapped with the next step (overlap_output_processing): the same outputs as without.

With the overlap a step's tokens are detokenized and checked for stop strings during the next step, so its
outputs come out one step() later, and a request that a stop string ends has already been scheduled once more:
that token must be dropped, its blocks freed, and nothing of it reported.
"""

import pytest

from modelgate.backends.llm.sampling_params import SamplingParams
from tests.backends.llm.test_engine import _drain, _engine, _prompts, checkpoint  # noqa: F401  (fixture)


def _mixed_arrivals(engine):
    prompts = _prompts(engine, 6)
    free_text = _drain(engine, [("probe", prompts[0], SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))])[
        "probe"
    ][1]
    stop = free_text[4:7]
    return [
        ("greedy", prompts[1], SamplingParams(max_tokens=9, temperature=0, ignore_eos=True)),
        ("stop_string", prompts[0], SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, stop=[stop])),
        ("eos_allowed", prompts[2], SamplingParams(max_tokens=14, temperature=0)),
        ("seeded", prompts[3], SamplingParams(max_tokens=7, temperature=0.8, top_k=20, seed=11, ignore_eos=True)),
        (
            "stop_token",
            prompts[4],
            SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, stop_token_ids=[7, 9, 11]),
        ),
    ]


@pytest.mark.parametrize("settings", [{}, {"max_num_batched_tokens": 8}])
def test_overlapped_outputs_equal_the_sequential_ones(checkpoint, settings):  # noqa: F811
    sequential = _engine(checkpoint, overlap_output_processing=False, **settings)
    overlapped = _engine(checkpoint, overlap_output_processing=True, **settings)
    expected = _drain(sequential, _mixed_arrivals(sequential))
    got = _drain(overlapped, _mixed_arrivals(overlapped))
    assert got == expected
    assert expected["stop_string"][2] == "stop"


def test_outputs_come_one_step_later_and_abort_drops_the_pending_one(checkpoint):  # noqa: F811
    engine = _engine(checkpoint)
    assert engine.config.overlap_output_processing  # the default
    prompt = engine.tokenizer.encode("apple a day")
    engine.add_request("a", prompt, SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
    assert engine.step() == []  # the prefill's token is sampled, not processed yet
    first = engine.step()
    assert [o.request_id for o in first] == ["a"] and len(first[0].new_token_ids) == 1
    engine.step()
    output = engine.abort("a")  # one token sampled and not yet reported: the abort reports it
    assert output.finished and output.finish_reason == "abort" and len(output.new_token_ids) == 1
    assert not engine.has_unfinished and engine.step() == []
    assert engine.kv_cache.pool.num_free_blocks == engine.kv_cache.pool.num_blocks


def test_last_outputs_are_flushed_when_nothing_is_left_to_schedule(checkpoint):  # noqa: F811
    engine = _engine(checkpoint)
    engine.add_request(
        "b", engine.tokenizer.encode("lazy dog"), SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)
    )
    seen = []
    while engine.has_unfinished:
        seen.extend(engine.step())
    assert sum(len(o.new_token_ids) for o in seen) == 3 and seen[-1].finished


class _LaterLaunch:
    """A step queued ahead, as the CPU can play it: the runner runs it when its tokens are asked for, by which
    time the tokens it reads (the step before's) are on the requests, as on the GPU they are on the device."""

    def __init__(self, runner, scheduled):
        self._runner, self._scheduled = runner, scheduled

    def result(self):
        for item in self._scheduled.scheduled:
            item.token_on_device = False  # its token is on its request by now: the layout reads it from there
        return self._runner.launch(self._scheduled).result()


def _with_steps_ahead(engine):
    engine.config = engine.config.model_copy(update={"launch_decode_ahead": True})
    engine.runner.can_launch_ahead = lambda previous, pending: True
    engine.runner.launch_ahead = lambda output, previous, pending: _LaterLaunch(engine.runner, output)
    return engine


@pytest.mark.parametrize("settings", [{}, {"max_num_batched_tokens": 8}])
def test_with_a_step_queued_ahead_outputs_equal_the_sequential_ones(checkpoint, settings):  # noqa: F811
    sequential = _engine(checkpoint, overlap_output_processing=False, **settings)
    ahead = _with_steps_ahead(_engine(checkpoint, overlap_output_processing=True, **settings))
    expected = _drain(sequential, _mixed_arrivals(sequential))
    assert _drain(ahead, _mixed_arrivals(ahead)) == expected


def test_with_a_step_queued_ahead_a_steps_tokens_are_reported_by_that_step(checkpoint):  # noqa: F811
    """The GPU has the step ahead to run while this step's outputs are processed: nothing to overlap by waiting
    a step, so the prefill's token (the time to first token) comes out of the prefill's own step()."""
    engine = _with_steps_ahead(_engine(checkpoint))
    engine.add_request("a", engine.tokenizer.encode("apple a day"), SamplingParams(max_tokens=3, temperature=0))
    first = engine.step()
    assert [o.request_id for o in first] == ["a"] and len(first[0].new_token_ids) == 1
    assert len(engine.step()[0].new_token_ids) == 1
