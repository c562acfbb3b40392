"""What the model runner asks of tensor parallelism, in one object that does nothing in a single process.

The runner builds its model from `model_config` (this rank's shapes), loads it through `checkpoint_slice`,
calls `parallelize` after loading, agrees on the KV cache size with `min_over_ranks`, and, on rank 0, hands
each step to `send_step` before running it. Keeping these behind one object keeps model_runner.py's changes
to one line each.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.parallel import state
from modelgate.backends.llm.parallel.sharding import Shard


@dataclass(frozen=True)
class RankShard:
    model_config: DecoderConfig  # this rank's (the whole model's in one process)
    shard: Shard | None = None
    tp: state.TensorParallel | None = None

    @classmethod
    def of_this_process(cls, full: DecoderConfig) -> RankShard:
        tp = state.current()
        if tp is None:
            return cls(full)
        shard = Shard(full, tp.rank, tp.world_size)
        return cls(shard.local_config(), shard, tp)

    @property
    def checkpoint_slice(self):
        """For load_weights: this rank's slice of each checkpoint tensor (None: load everything)."""
        return None if self.shard is None else self.shard.checkpoint_slice

    def parallelize(self, model) -> None:
        if self.shard is not None:
            from modelgate.backends.llm.parallel.layers import parallelize

            parallelize(model, self.shard, self.tp)

    def min_over_ranks(self, value: int) -> int:
        return value if self.tp is None else self.tp.min_over_ranks(value)

    def send_step(self, scheduled) -> None:
        if self.tp is not None and self.tp.is_driver:
            from modelgate.backends.llm.parallel.step_channel import send_step

            send_step(self.tp, scheduled)
