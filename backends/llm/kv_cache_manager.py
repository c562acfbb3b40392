"""Which KV cache blocks each request owns, with prefix caching.

A request's blocks hold its tokens in order: token i lives in block i // block_size at
offset i % block_size. Full blocks are keyed by a hash chained over all tokens before
them, so a new request whose prompt starts with the same tokens reuses those blocks.

Runs for every request on every step, so the common cases are kept cheap: a decode that
stays inside its last block changes nothing, block ids are kept as a list beside the
blocks (not rebuilt per step), and a request's block hashes are computed once, as its
blocks fill, and remembered on the request.
"""

from __future__ import annotations

from modelgate.backends.llm.block_pool import BlockPool, KVBlock, PrefixCacheStats
from modelgate.backends.llm.request import LLMRequest

_ROOT_HASH = 0x9E3779B97F4A7C15


def chained_block_hashes(token_ids: list[int], block_size: int, parent: int = _ROOT_HASH) -> list[int]:
    """Hash of each full block of `token_ids`, each one covering every token before it.

    `parent` is the hash of the block before `token_ids[0]` (the root for a sequence's start).
    """
    hashes = []
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
        self._block_ids: dict[str, list[int]] = {}  # the same blocks' ids, in the same order
        self._num_cached_blocks: dict[str, int] = {}

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests."""
        return 1.0 - self.pool.num_free_blocks / self.pool.num_blocks

    def block_ids(self, request_id: str) -> list[int]:
        """The request's block table: the manager's own list, not a copy, so read it, never change it.

        It grows in place as the request is given more blocks; after `free` the manager no longer
        touches it (a later allocation for the same id starts a new list).
        """
        block_ids = self._block_ids.get(request_id)
        return block_ids if block_ids is not None else []

    def find_cached_prefix(self, request: LLMRequest) -> tuple[list[KVBlock], int]:
        """(cached blocks, tokens they cover) for a request not yet holding blocks.

        The last prompt token is always recomputed, so the engine has logits to sample from.
        """
        if not self.enable_prefix_caching:
            return [], 0
        size = self.block_size
        usable = (request.num_tokens - 1) // size
        hashes = self._block_hashes(request, usable)
        found = []
        for index in range(usable):
            block = self.pool.cached_block(hashes[index])
            if block is None or block.token_ids != tuple(request.token_slice(index * size, (index + 1) * size)):
                break
            found.append(block)
        self.stats.num_queries += request.num_prompt_tokens
        self.stats.num_hits += len(found) * size
        return found, len(found) * size

    def allocate_slots(self, request: LLMRequest, num_new_tokens: int, cached: list[KVBlock] = ()) -> bool:
        """Make room for `num_new_tokens` more tokens after the computed ones; False if no room.

        `cached` blocks (from find_cached_prefix) are taken first; the new tokens come after
        them. Nothing changes when it returns False.
        """
        request_id = request.request_id
        held = self._blocks.get(request_id)
        num_held = len(held) if held is not None else 0
        total_tokens = request.num_computed_tokens + len(cached) * self.block_size + num_new_tokens
        needed = -(-total_tokens // self.block_size) - num_held - len(cached)
        if needed <= 0 and held is not None and not cached:
            return True  # the common decode step: the new token fits the last block
        reclaimable_cached = sum(1 for b in cached if b.ref_count == 0)
        if max(needed, 0) > self.pool.num_free_blocks - reclaimable_cached:
            return False
        self.pool.touch(cached)
        taken = list(cached)
        if needed > 0:
            taken.extend(self.pool.allocate(needed))
        self._blocks.setdefault(request_id, []).extend(taken)
        self._block_ids.setdefault(request_id, []).extend(b.block_id for b in taken)
        self._num_cached_blocks[request_id] = max(self._num_cached_blocks.get(request_id, 0), len(cached))
        return True

    def cache_full_blocks(self, request: LLMRequest) -> None:
        """Register the request's blocks that became full of computed tokens."""
        if not self.enable_prefix_caching:
            return
        blocks = self._blocks.get(request.request_id)
        if not blocks:
            return
        done = self._num_cached_blocks.get(request.request_id, 0)
        full = min(request.num_computed_tokens // self.block_size, len(blocks))
        if full <= done:
            return
        size = self.block_size
        hashes = self._block_hashes(request, full)
        for index in range(done, full):
            start = index * size
            self.pool.cache(blocks[index], hashes[index], tuple(request.token_slice(start, start + size)))
        self._num_cached_blocks[request.request_id] = full

    def free(self, request: LLMRequest) -> None:
        """Release every block of the request (tail first); safe to call twice."""
        blocks = self._blocks.pop(request.request_id, [])
        self._block_ids.pop(request.request_id, None)
        self._num_cached_blocks.pop(request.request_id, None)
        self.pool.release(blocks[::-1])

    def num_requests_holding_blocks(self) -> int:
        return len(self._blocks)

    def _block_hashes(self, request: LLMRequest, num_blocks: int) -> list[int]:
        """`request.block_hashes`, first extended to at least `num_blocks` full blocks (when it has them)."""
        hashes = request.block_hashes
        if len(hashes) < num_blocks:
            size = self.block_size
            start = len(hashes) * size
            parent = hashes[-1] if hashes else _ROOT_HASH
            hashes.extend(chained_block_hashes(request.token_slice(start, num_blocks * size), size, parent))
        return hashes

    def check_invariants(self) -> None:
        """For tests: reference counts equal the number of requests holding each block."""
        self.pool.check_invariants()
        holders: dict[int, int] = {}
        for request_id, blocks in self._blocks.items():
            assert self._block_ids[request_id] == [b.block_id for b in blocks], "block ids out of sync"
            for block in blocks:
                holders[block.block_id] = holders.get(block.block_id, 0) + 1
        for block in self.pool.blocks:
            assert block.ref_count == holders.get(block.block_id, 0), f"block {block.block_id} refcount mismatch"
