"""A stand-in for the model runner that keeps token ids in a simulated paged KV cache.

The next token is a hash of the whole context *read back through the block table*, so a
wrong block table, position or prefix-cache hit changes the output.
"""

from modelgate.backends.llm.scheduler import SchedulerOutput

VOCAB = 50


class FakeRunner:
    def __init__(self, num_blocks: int, block_size: int):
        self.block_size = block_size
        self.slots = [None] * (num_blocks * block_size)

    def execute(self, output: SchedulerOutput) -> dict[str, int]:
        sampled = {}
        for item in output.scheduled:
            tokens = item.request.all_token_ids
            for position in range(item.num_computed_tokens, item.num_computed_tokens + item.num_new_tokens):
                self.slots[self._slot(item.block_ids, position)] = tokens[position]
            if item.samples:
                length = item.num_computed_tokens + item.num_new_tokens
                context = [self.slots[self._slot(item.block_ids, p)] for p in range(length)]
                sampled[item.request.request_id] = next_token(context)
        return sampled

    def _slot(self, block_ids: list[int], position: int) -> int:
        return block_ids[position // self.block_size] * self.block_size + position % self.block_size


def next_token(context: list[int]) -> int:
    value = 17
    for token in context:
        value = (value * 31 + token + 1) % 1_000_003
    return value % VOCAB
