"""Scheduler.schedule_ahead: the next decode step scheduled before the current step's tokens are known.

The pipeline of the engine (launch_decode_ahead) is simulated with the fake runner: step N+1 is scheduled
ahead before update_from_output(N), and run after it (the GPU reads N's tokens on the device; here they are
simply on the requests by then). Outputs must equal each request run alone, through stop tokens (a wasted row
for the request that stopped), max_tokens, preemption and arrivals.
"""

import random

import pytest

from modelgate.backends.llm.kv_cache_manager import KVCacheManager
from modelgate.backends.llm.request import LLMRequest, RequestStatus
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import Scheduler, SchedulerConfig
from tests.backends.llm.fake_runner import FakeRunner
from tests.backends.llm.test_scheduler import _reference


def _requests(count, seed, eos=None):
    rng = random.Random(seed)
    made = []
    for i in range(count):
        prompt = [rng.randrange(50) for _ in range(rng.randrange(1, 30))]
        sampling = SamplingParams(max_tokens=rng.randrange(1, 25), temperature=0)
        made.append(LLMRequest(f"r{i}", prompt, sampling, eos_token_ids=() if eos is None else (eos,)))
    return made


def _expected(request: LLMRequest) -> list[int]:
    tokens = _reference(request.prompt_token_ids, request.sampling.max_tokens)
    for index, token in enumerate(tokens):
        if token in request.eos_token_ids:
            return tokens[: index + 1]
    return tokens


def _run_ahead(requests, num_blocks=64, block_size=4, max_num_seqs=8, budget=32, arrive_at_once=False, admits=None):
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=4096)
    kv = KVCacheManager(num_blocks, block_size)
    scheduler = Scheduler(config, kv)
    runner = FakeRunner(num_blocks, block_size)
    pending = list(requests)
    if arrive_at_once:
        for request in pending:
            scheduler.add_request(request)
        pending = []
    finished, ahead_steps, steps, admitted_steps = {}, 0, 0, []
    output = None
    while pending or scheduler.has_unfinished or output is not None:
        if pending:
            scheduler.add_request(pending.pop(0))
        if output is None:
            output = scheduler.schedule()
        ahead = scheduler.schedule_ahead(output, admits)  # before this step's tokens exist
        if ahead is not None:
            ahead_steps += 1
            decodes = [item for item in ahead.scheduled if item.token_on_device]
            assert all(item.samples and item.num_new_tokens == 1 for item in decodes)
            assert all(item.request in [i.request for i in output.scheduled] for item in decodes)
            admitted = [item for item in ahead.scheduled if not item.token_on_device]
            assert ahead.scheduled == decodes + admitted  # the decodes first, as schedule() puts running ones
            if admitted:
                admitted_steps.append(len(admitted))
        result = scheduler.update_from_output(output, runner.execute(output))
        for request in result.finished:
            finished[request.request_id] = request
        kv.check_invariants()
        output = ahead
        steps += 1
        assert steps < 10_000
    assert kv.pool.num_free_blocks == num_blocks, "blocks leaked"
    scheduler.admitted_steps = admitted_steps
    return finished, ahead_steps, scheduler


@pytest.mark.parametrize(
    "settings",
    [
        {},  # one arrival per step: mostly no ahead while requests wait and seats are free
        {"arrive_at_once": True, "max_num_seqs": 4},  # a full batch with a queue: decodes chain ahead
        {"arrive_at_once": True, "max_num_seqs": 16, "budget": 512},
        {"arrive_at_once": True, "num_blocks": 14, "budget": 64},  # too few blocks: preemption, refused aheads
    ],
)
def test_outputs_with_steps_scheduled_ahead_equal_each_request_alone(settings):
    requests = _requests(16, seed=4, eos=7)
    expected = {r.request_id: _expected(r) for r in requests}
    finished, ahead_steps, scheduler = _run_ahead(requests, **settings)
    assert {rid: r.output_token_ids for rid, r in finished.items()} == expected
    assert any(r.status == RequestStatus.FINISHED_STOPPED for r in finished.values())  # stop tokens happened
    if settings.get("arrive_at_once"):
        assert ahead_steps > 0
    if settings.get("num_blocks") == 14:
        assert scheduler.num_preemptions > 0


@pytest.mark.parametrize(
    "settings",
    [
        {},  # one arrival per step, each admitted into the step queued ahead
        {"budget": 8},  # prompts longer than what the decodes leave: chunks, after which no step goes ahead
        {"num_blocks": 14, "budget": 64},  # too few blocks: admissions stop short, preemption
    ],
)
def test_arrivals_admitted_into_steps_ahead_give_each_request_its_output_alone(settings):
    requests = _requests(16, seed=5, eos=7)
    expected = {r.request_id: _expected(r) for r in requests}
    finished, ahead_steps, scheduler = _run_ahead(requests, admits=lambda request: True, **settings)
    assert {rid: r.output_token_ids for rid, r in finished.items()} == expected
    assert scheduler.admitted_steps, "no arrival joined a step ahead"
    _, ahead_without, _ = _run_ahead(_requests(16, seed=5, eos=7), **settings)
    assert ahead_steps > ahead_without


def test_a_waiting_request_refused_ahead_waits_for_schedule_and_is_admitted_there():
    first = LLMRequest("first", [1, 2, 3], SamplingParams(max_tokens=5, temperature=0))
    scheduler, output = _scheduled_once([first], max_num_seqs=4)
    host = LLMRequest("host", [4, 5], SamplingParams(max_tokens=5, temperature=0))
    device = LLMRequest("device", [6], SamplingParams(max_tokens=5, temperature=0))
    scheduler.add_request(host)
    scheduler.add_request(device)

    def on_the_device(request):
        return request is device

    assert scheduler.schedule_ahead(output, on_the_device) is None  # the first in line is refused: no step ahead
    assert [r.request_id for r in scheduler.waiting] == ["host", "device"]  # nothing was admitted
    scheduler.update_from_output(output, {"first": 9})
    following = scheduler.schedule()
    assert [item.request.request_id for item in following.scheduled] == ["first", "host", "device"]
    late = LLMRequest("late", [7, 8], SamplingParams(max_tokens=5, temperature=0))
    scheduler.add_request(late)
    refused_behind = LLMRequest("refused", [9], SamplingParams(max_tokens=5, temperature=0))
    scheduler.add_request(refused_behind)
    ahead = scheduler.schedule_ahead(following, lambda request: request is not refused_behind)
    assert [(i.request.request_id, i.token_on_device) for i in ahead.scheduled] == [
        ("first", True),
        ("host", True),
        ("device", True),
        ("late", False),
    ]
    assert [r.request_id for r in scheduler.waiting] == ["refused"]


def _scheduled_once(requests, **config):
    scheduler = Scheduler(SchedulerConfig(**config), KVCacheManager(32, 4))
    for request in requests:
        scheduler.add_request(request)
    return scheduler, scheduler.schedule()


def test_no_step_ahead_while_a_waiting_request_could_be_admitted():
    prompts = [LLMRequest(f"p{i}", [1, 2, 3], SamplingParams(max_tokens=5, temperature=0)) for i in range(2)]
    scheduler, output = _scheduled_once(prompts[:1], max_num_seqs=2)
    scheduler.add_request(prompts[1])
    assert scheduler.schedule_ahead(output) is None
    full, output = _scheduled_once(prompts[:1], max_num_seqs=1)
    full.add_request(LLMRequest("late", [4], SamplingParams(max_tokens=5, temperature=0)))
    assert full.schedule_ahead(output) is not None  # no seat for it anyway


def test_no_step_ahead_after_a_prefill_chunk_that_samples_nothing():
    long = LLMRequest("long", list(range(20)), SamplingParams(max_tokens=5, temperature=0))
    scheduler, output = _scheduled_once([long], max_num_batched_tokens=8)
    assert not output.scheduled[0].samples
    assert scheduler.schedule_ahead(output) is None


def test_step_ahead_decodes_each_request_once_more_and_leaves_out_those_that_finish_by_length():
    going = LLMRequest("going", [1, 2, 3, 4], SamplingParams(max_tokens=5, temperature=0))
    last = LLMRequest("last", [5, 6], SamplingParams(max_tokens=1, temperature=0))
    scheduler, output = _scheduled_once([going, last])
    ahead = scheduler.schedule_ahead(output)
    assert [item.request.request_id for item in ahead.scheduled] == ["going"]
    item = ahead.scheduled[0]
    assert (item.num_computed_tokens, item.num_new_tokens, item.samples) == (4, 1, True)
    # Slots for position 4 (the block after the prompt's) are held before the prompt step's update.
    assert len(scheduler.kv_cache.block_ids("going")) == 2
    scheduler.update_from_output(output, {"going": 9, "last": 8})
    scheduler.update_from_output(ahead, {"going": 10})
    assert going.output_token_ids == [9, 10] and going.num_computed_tokens == 5
    assert last.status == RequestStatus.FINISHED_LENGTH


def test_no_step_ahead_without_room_for_it():
    request = LLMRequest("r", [1, 2, 3, 4], SamplingParams(max_tokens=9, temperature=0))
    scheduler = Scheduler(SchedulerConfig(), KVCacheManager(1, 4))
    scheduler.add_request(request)
    output = scheduler.schedule()
    assert output.scheduled and scheduler.schedule_ahead(output) is None
