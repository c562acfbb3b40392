"""The KV cache manager's and scheduler's per-step shortcuts keep their results."""

from modelgate.backends.llm.kv_cache_manager import KVCacheManager, chained_block_hashes
from modelgate.backends.llm.request import LLMRequest, RequestStatus
from modelgate.backends.llm.sampling_params import SamplingParams
from modelgate.backends.llm.scheduler import Scheduler, SchedulerConfig
from tests.backends.llm.fake_runner import FakeRunner


def _decode_until(manager: KVCacheManager, request: LLMRequest, num_tokens: int) -> None:
    """Grow `request` token by token, as decode steps do, caching full blocks on the way."""
    while request.num_tokens < num_tokens:
        assert manager.allocate_slots(request, 1)
        request.num_computed_tokens += 1
        manager.cache_full_blocks(request)
        request.output_token_ids.append(request.num_tokens % 11)
    manager.check_invariants()


def test_incremental_block_hashes_equal_hashing_all_tokens_and_serve_prefix_hits():
    manager = KVCacheManager(num_blocks=32, block_size=4)
    first = LLMRequest("a", list(range(10)), SamplingParams())
    assert manager.allocate_slots(first, 9)
    first.num_computed_tokens = 9
    manager.cache_full_blocks(first)
    _decode_until(manager, first, 31)
    full = first.num_computed_tokens // 4
    assert first.block_hashes[:full] == chained_block_hashes(first.all_token_ids, 4)[:full]
    second = LLMRequest("b", first.all_token_ids[:-1] + [99], SamplingParams())
    cached, num_cached = manager.find_cached_prefix(second)
    assert num_cached == full * 4 and [b.block_id for b in cached] == manager.block_ids("a")[:full]


def test_block_ids_is_a_live_table_that_free_lets_go():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    request = LLMRequest("a", [1, 2, 3], SamplingParams())
    assert manager.allocate_slots(request, 3)
    table = manager.block_ids("a")
    free_before = manager.pool.num_free_blocks
    request.num_computed_tokens = 3
    assert manager.allocate_slots(request, 1)  # fits the last block: nothing allocated
    assert manager.pool.num_free_blocks == free_before and len(table) == 1
    request.num_computed_tokens = 4
    assert manager.allocate_slots(request, 1)  # crosses into a second block
    assert manager.block_ids("a") is table and len(table) == 2
    manager.free(request)
    assert manager.block_ids("a") == [] and len(table) == 2
    request.num_computed_tokens = 0
    assert manager.allocate_slots(request, 2)
    assert manager.block_ids("a") is not table and len(table) == 2
    manager.check_invariants()


def test_a_whole_batch_finishing_in_one_step_leaves_nothing_running():
    kv = KVCacheManager(64, 4)
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=16), kv)
    runner = FakeRunner(64, 4)
    # Equal in every field but the id: requests are told apart by identity, not by value.
    requests = [LLMRequest(f"r{i}", [1, 2, 3], SamplingParams(max_tokens=3, temperature=0)) for i in range(12)]
    for request in requests:
        scheduler.add_request(request)
    finished = []
    while scheduler.has_unfinished:
        output = scheduler.schedule()
        finished.append(len(scheduler.update_from_output(output, runner.execute(output)).finished))
    assert finished == [0, 0, 12]
    assert all(r.status == RequestStatus.FINISHED_LENGTH and len(r.output_token_ids) == 3 for r in requests)
    assert not scheduler.running and kv.pool.num_free_blocks == 64
    kv.check_invariants()
