"""Which KV cache blocks each request owns, with prefix caching.

A request's blocks hold its tokens in order: token i lives in block i // block_size at
offset i % block_size. Full blocks are keyed by a hash chained over all tokens before
them, so a new request whose prompt starts with the same tokens reuses those blocks.
"""

from __future__ import annotations

from backends.llm.block_pool import BlockPool, KVBlock, PrefixCacheStats
from backends.llm.request import LLMRequest

_ROOT_HASH = 0x9E3779B97F4A7C15


def chained_block_hashes(token_ids: list[int], block_size: int) -> list[int]:
    """Hash of each full block of `token_ids`, each one covering every token before it."""
    hashes = []
    parent = _ROOT_HASH
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(token_ids[start : start + block_size])))
        hashes.append(parent)
    return hashes


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.stats = PrefixCacheStats()
        self._blocks: dict[str, list[KVBlock]] = {}
        self._num_cached_blocks: dict[str, int] = {}

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests."""
        return 1.0 - self.pool.num_free_blocks / self.pool.num_blocks

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self._blocks.get(request_id, [])]

    def find_cached_prefix(self, request: LLMRequest) -> tuple[list[KVBlock], int]:
        """(cached blocks, tokens they cover) for a request not yet holding blocks.

        The last prompt token is always recomputed, so the engine has logits to sample from.
        """
        if not self.enable_prefix_caching:
            return [], 0
        tokens = request.all_token_ids
        usable = (len(tokens) - 1) // self.block_size
        found = []
        for index, block_hash in enumerate(chained_block_hashes(tokens[: usable * self.block_size], self.block_size)):
            start = index * self.block_size
            block = self.pool.lookup(block_hash, tuple(tokens[start : start + self.block_size]))
            if block is None:
                break
            found.append(block)
        self.stats.num_queries += request.num_prompt_tokens
        self.stats.num_hits += len(found) * self.block_size
        return found, len(found) * self.block_size

    def allocate_slots(self, request: LLMRequest, num_new_tokens: int, cached: list[KVBlock] = ()) -> bool:
        """Make room for `num_new_tokens` more tokens after the computed ones; False if no room.

        `cached` blocks (from find_cached_prefix) are taken first; the new tokens come after
        them. Nothing changes when it returns False.
        """
        held = self._blocks.get(request.request_id, [])
        total_tokens = request.num_computed_tokens + len(cached) * self.block_size + num_new_tokens
        needed = -(-total_tokens // self.block_size) - len(held) - len(cached)
        reclaimable_cached = sum(1 for b in cached if b.ref_count == 0)
        if max(needed, 0) > self.pool.num_free_blocks - reclaimable_cached:
            return False
        self.pool.touch(list(cached))
        blocks = self._blocks.setdefault(request.request_id, [])
        blocks.extend(cached)
        if needed > 0:
            blocks.extend(self.pool.allocate(needed))
        self._num_cached_blocks.setdefault(request.request_id, 0)
        self._num_cached_blocks[request.request_id] = max(self._num_cached_blocks[request.request_id], len(cached))
        return True

    def cache_full_blocks(self, request: LLMRequest) -> None:
        """Register the request's blocks that became full of computed tokens."""
        if not self.enable_prefix_caching:
            return
        blocks = self._blocks.get(request.request_id, [])
        done = self._num_cached_blocks.get(request.request_id, 0)
        full = min(request.num_computed_tokens // self.block_size, len(blocks))
        if full <= done:
            return
        tokens = request.all_token_ids
        hashes = chained_block_hashes(tokens[: full * self.block_size], self.block_size)
        for index in range(done, full):
            start = index * self.block_size
            self.pool.cache(blocks[index], hashes[index], tuple(tokens[start : start + self.block_size]))
        self._num_cached_blocks[request.request_id] = full

    def free(self, request: LLMRequest) -> None:
        """Release every block of the request (tail first); safe to call twice."""
        blocks = self._blocks.pop(request.request_id, [])
        self._num_cached_blocks.pop(request.request_id, None)
        self.pool.release(list(reversed(blocks)))

    def num_requests_holding_blocks(self) -> int:
        return len(self._blocks)

    def check_invariants(self) -> None:
        """For tests: reference counts equal the number of requests holding each block."""
        self.pool.check_invariants()
        holders: dict[int, int] = {}
        for blocks in self._blocks.values():
            for block in blocks:
                holders[block.block_id] = holders.get(block.block_id, 0) + 1
        for block in self.pool.blocks:
            assert block.ref_count == holders.get(block.block_id, 0), f"block {block.block_id} refcount mismatch"
