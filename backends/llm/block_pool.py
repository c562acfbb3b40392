"""The KV cache blocks: reference counts, the free queue (LRU) and the prefix-cache table.

A block is *free* when no request holds it (ref_count 0). A free block may still hold a
full, hashed block of tokens: it stays findable in the prefix table until it is reused,
and free blocks are reused least-recently-freed first, so hot prefixes survive longest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class KVBlock:
    block_id: int
    ref_count: int = 0
    # Set once the block is full and cached: the chained hash and the tokens it holds.
    block_hash: int | None = None
    token_ids: tuple[int, ...] = field(default=(), repr=False)


@dataclass
class PrefixCacheStats:
    num_queries: int = 0  # prompt tokens looked up
    num_hits: int = 0  # of those, tokens found cached

    @property
    def hit_rate(self) -> float:
        return self.num_hits / self.num_queries if self.num_queries else 0.0


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, KVBlock] = OrderedDict((b.block_id, b) for b in self.blocks)
        self._cached: dict[int, KVBlock] = {}

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def allocate(self, count: int) -> list[KVBlock]:
        """`count` blocks from the front of the free queue, evicting their cached contents."""
        if count > len(self._free):
            raise ValueError(f"asked for {count} blocks, {len(self._free)} free")
        taken = []
        for _ in range(count):
            _, block = self._free.popitem(last=False)
            self._evict(block)
            block.ref_count = 1
            taken.append(block)
        return taken

    def touch(self, blocks: list[KVBlock]) -> None:
        """Take a reference on cached blocks found for a new request."""
        for block in blocks:
            if block.ref_count == 0:
                del self._free[block.block_id]
            block.ref_count += 1

    def release(self, blocks: list[KVBlock]) -> None:
        """Drop one reference from each block; blocks reaching zero join the free queue's end.

        Callers pass a request's blocks tail first, so that the tail of a sequence (least
        likely to be shared) is reused before its prefix.
        """
        for block in blocks:
            assert block.ref_count > 0, f"block {block.block_id} released more often than taken"
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block.block_id] = block

    def cached_block(self, block_hash: int) -> KVBlock | None:
        """The cached block under `block_hash`, if any; the caller compares its `token_ids` (a hash may collide)."""
        return self._cached.get(block_hash)

    def cache(self, block: KVBlock, block_hash: int, token_ids: tuple[int, ...]) -> None:
        """Record a full block under its hash (a block already cached keeps its first entry)."""
        if block.block_hash is not None:
            return
        block.block_hash = block_hash
        block.token_ids = token_ids
        self._cached.setdefault(block_hash, block)

    def _evict(self, block: KVBlock) -> None:
        if block.block_hash is not None:
            if self._cached.get(block.block_hash) is block:
                del self._cached[block.block_hash]
            block.block_hash = None
            block.token_ids = ()

    def check_invariants(self) -> None:
        """For tests: free queue == blocks with ref 0; cached entries point at hashed blocks."""
        free_ids = {b.block_id for b in self.blocks if b.ref_count == 0}
        assert free_ids == set(self._free), "free queue out of sync with reference counts"
        assert all(b.ref_count >= 0 for b in self.blocks)
        for block_hash, block in self._cached.items():
            assert block.block_hash == block_hash, "prefix table entry points at a block with another hash"
