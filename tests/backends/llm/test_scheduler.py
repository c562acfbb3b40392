"""The scheduler under in-flight batching: same outputs as alone, with chunking, preemption, prefix hits."""

import random

import pytest

from modelgate.backends.llm.kv_cache_manager import KVCacheManager
from modelgate.backends.llm.request import LLMRequest, RequestStatus
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import Scheduler, SchedulerConfig
from tests.backends.llm.fake_runner import FakeRunner, next_token


def _reference(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt) :]


def _run(
    requests,
    num_blocks=64,
    block_size=4,
    max_num_seqs=8,
    max_tokens_per_step=32,
    prefix=True,
    chunked=True,
    on_step=None,
):
    config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_tokens_per_step,
        max_model_len=4096,
        enable_chunked_prefill=chunked,
    )
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix)
    scheduler = Scheduler(config, kv)
    runner = FakeRunner(num_blocks, block_size)
    pending = list(requests)
    finished = {}
    steps = 0
    while pending or scheduler.has_unfinished:
        if pending:
            scheduler.add_request(pending.pop(0))  # one new arrival per step: in-flight batching
        output = scheduler.schedule()
        assert output.num_tokens <= max_tokens_per_step
        assert len({s.request.request_id for s in output.scheduled}) <= max_num_seqs
        result = scheduler.update_from_output(output, runner.execute(output))
        for request in result.finished:
            finished[request.request_id] = request
        kv.check_invariants()
        if on_step:
            on_step(scheduler, steps)
        steps += 1
        assert steps < 10_000
    assert kv.pool.num_free_blocks == num_blocks, "blocks leaked"
    assert kv.num_requests_holding_blocks() == 0
    return finished, scheduler


def _requests(count, seed=0, shared_prefix=()):
    rng = random.Random(seed)
    made = []
    for i in range(count):
        prompt = list(shared_prefix) + [rng.randrange(50) for _ in range(rng.randrange(1, 30))]
        made.append(LLMRequest(f"r{i}", prompt, SamplingParams(max_tokens=rng.randrange(1, 20), temperature=0)))
    return made


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"chunked": True, "max_tokens_per_step": 7},
        {"num_blocks": 12, "max_tokens_per_step": 16},  # forces preemption
        {"prefix": False},
        {"max_num_seqs": 2},
    ],
)
def test_batched_outputs_equal_each_request_alone(settings):
    requests = _requests(20, seed=1)
    expected = {r.request_id: _reference(r.prompt_token_ids, r.sampling.max_tokens) for r in requests}
    finished, _ = _run(requests, **settings)
    assert {rid: r.output_token_ids for rid, r in finished.items()} == expected
    assert all(r.status == RequestStatus.FINISHED_LENGTH for r in finished.values())


def test_preemption_happens_and_is_recomputed_correctly():
    requests = _requests(12, seed=2)
    expected = {r.request_id: _reference(r.prompt_token_ids, r.sampling.max_tokens) for r in requests}
    finished, scheduler = _run(requests, num_blocks=10, max_tokens_per_step=64)
    assert scheduler.num_preemptions > 0
    assert {rid: r.output_token_ids for rid, r in finished.items()} == expected


def test_prefix_cache_hits_give_the_same_outputs():
    shared = list(range(3, 27))
    requests = _requests(10, seed=3, shared_prefix=shared)
    expected = {r.request_id: _reference(r.prompt_token_ids, r.sampling.max_tokens) for r in requests}
    finished, scheduler = _run(requests, num_blocks=80)
    assert {rid: r.output_token_ids for rid, r in finished.items()} == expected
    assert sum(r.num_cached_prompt_tokens for r in finished.values()) >= 9 * 24
    assert scheduler.kv_cache.stats.hit_rate > 0.3


def test_prompt_longer_than_budget_needs_chunking():
    request = LLMRequest("long", list(range(40)), SamplingParams(max_tokens=3, temperature=0))
    config = SchedulerConfig(max_num_batched_tokens=16, enable_chunked_prefill=True)
    scheduler = Scheduler(config, KVCacheManager(32, 4))
    runner = FakeRunner(32, 4)
    scheduler.add_request(request)
    chunks = []
    while scheduler.has_unfinished:
        output = scheduler.schedule()
        chunks.append(output.num_tokens)
        scheduler.update_from_output(output, runner.execute(output))
    assert chunks[:3] == [16, 16, 8]
    assert request.output_token_ids == _reference(list(range(40)), 3)


def test_abort_frees_blocks_at_once():
    config = SchedulerConfig()
    kv = KVCacheManager(16, 4)
    scheduler = Scheduler(config, kv)
    runner = FakeRunner(16, 4)
    request = LLMRequest("a", list(range(10)), SamplingParams(max_tokens=100, temperature=0))
    scheduler.add_request(request)
    output = scheduler.schedule()
    scheduler.update_from_output(output, runner.execute(output))
    assert kv.block_ids("a")
    assert scheduler.abort("a") is request
    assert request.status == RequestStatus.FINISHED_ABORTED
    assert kv.pool.num_free_blocks == 16 and not scheduler.has_unfinished
    assert scheduler.abort("a") is None
    kv.check_invariants()


def test_eos_and_stop_tokens_and_min_tokens():
    prompt = [1, 2, 3]
    reference = _reference(prompt, 30)
    eos = reference[2]
    first_eos = reference.index(eos)
    request = LLMRequest("e", prompt, SamplingParams(max_tokens=30, temperature=0), eos_token_ids=(eos,))
    finished, _ = _run([request])
    assert finished["e"].output_token_ids == reference[: first_eos + 1]
    assert finished["e"].status == RequestStatus.FINISHED_STOPPED
    held_back = LLMRequest(
        "m", prompt, SamplingParams(max_tokens=30, min_tokens=first_eos + 2, temperature=0), eos_token_ids=(eos,)
    )
    finished, _ = _run([held_back])
    assert len(finished["m"].output_token_ids) > first_eos + 1
    ignoring = LLMRequest(
        "i", prompt, SamplingParams(max_tokens=30, ignore_eos=True, temperature=0), eos_token_ids=(eos,)
    )
    finished, _ = _run([ignoring])
    assert finished["i"].output_token_ids == reference
