"""KV cache manager: block accounting, prefix caching, LRU reuse, no leaks."""

import pytest

from modelgate.backends.llm.kv_cache_manager import KVCacheManager, chained_block_hashes
from modelgate.backends.llm.request import LLMRequest
from modelgate.backends.llm.sampling_params import SamplingParams


def _request(request_id: str, tokens: list[int]) -> LLMRequest:
    return LLMRequest(request_id, list(tokens), SamplingParams())


def test_chained_hashes_depend_on_every_earlier_token():
    a = chained_block_hashes([1, 2, 3, 4, 5, 6, 7, 8], 4)
    b = chained_block_hashes([9, 2, 3, 4, 5, 6, 7, 8], 4)
    assert len(a) == 2 and a[0] != b[0] and a[1] != b[1]
    assert chained_block_hashes([1, 2, 3], 4) == []


def test_allocation_grows_by_blocks_and_free_returns_everything():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    request = _request("a", range(6))
    assert manager.allocate_slots(request, 6)
    assert len(manager.block_ids("a")) == 2
    request.num_computed_tokens = 6
    assert manager.allocate_slots(request, 2)  # fills block 2 exactly
    assert len(manager.block_ids("a")) == 2
    request.num_computed_tokens = 8
    assert manager.allocate_slots(request, 1)
    assert len(manager.block_ids("a")) == 3
    manager.check_invariants()
    manager.free(request)
    manager.free(request)  # twice is harmless
    assert manager.pool.num_free_blocks == 8
    manager.check_invariants()


def test_refuses_without_changing_anything_when_full():
    manager = KVCacheManager(num_blocks=2, block_size=4)
    first = _request("a", range(8))
    assert manager.allocate_slots(first, 8)
    second = _request("b", range(4))
    assert not manager.allocate_slots(second, 4)
    assert manager.block_ids("b") == []
    manager.check_invariants()


def test_prefix_hits_share_blocks_and_last_token_is_recomputed():
    manager = KVCacheManager(num_blocks=16, block_size=4)
    first = _request("a", range(12))
    assert manager.allocate_slots(first, 12)
    first.num_computed_tokens = 12
    manager.cache_full_blocks(first)
    second = _request("b", list(range(12)))
    cached, num_cached = manager.find_cached_prefix(second)
    assert num_cached == 8  # 3 full blocks match, but the last prompt token must be computed
    assert manager.allocate_slots(second, 12 - num_cached, cached)
    assert manager.block_ids("b")[:2] == manager.block_ids("a")[:2]
    assert manager.pool.blocks[manager.block_ids("a")[0]].ref_count == 2
    manager.check_invariants()
    assert manager.stats.num_hits == 8 and manager.stats.num_queries == 12


def test_freed_cached_blocks_are_found_until_reused_in_lru_order():
    manager = KVCacheManager(num_blocks=4, block_size=2)
    first = _request("a", [1, 2, 3, 4, 5])
    assert manager.allocate_slots(first, 5)
    first.num_computed_tokens = 5
    manager.cache_full_blocks(first)
    manager.free(first)
    again = _request("b", [1, 2, 3, 4, 9])
    cached, num_cached = manager.find_cached_prefix(again)
    assert num_cached == 4
    # Filling the whole cache with new tokens evicts the cached prefix.
    other = _request("c", [7] * 8)
    assert manager.allocate_slots(other, 8)
    manager.free(other)
    _, num_cached = manager.find_cached_prefix(_request("d", [1, 2, 3, 4, 9]))
    assert num_cached == 0
    manager.check_invariants()


def test_cached_free_blocks_count_against_room():
    manager = KVCacheManager(num_blocks=3, block_size=2)
    first = _request("a", [1, 2, 3, 4])
    assert manager.allocate_slots(first, 4)
    first.num_computed_tokens = 4
    manager.cache_full_blocks(first)
    manager.free(first)
    second = _request("b", [1, 2, 3, 4, 5, 6, 7, 8])
    cached, num_cached = manager.find_cached_prefix(second)
    assert num_cached == 4 and len(cached) == 2
    # 8 tokens need 4 blocks: 2 cached + 2 new, but only 1 block is free besides the cached two.
    assert not manager.allocate_slots(second, 4, cached)
    manager.check_invariants()
    assert manager.allocate_slots(second, 2, cached)
    manager.check_invariants()


def test_zero_blocks_is_an_error():
    with pytest.raises(ValueError):
        KVCacheManager(num_blocks=0, block_size=4)
