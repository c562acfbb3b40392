"""What the model runner asks of tensor and pipeline parallelism, in one object that does nothing in a single
process.

The runner builds its model from `model_config` (this rank's shapes and, with pipeline stages, its layers)
and `model_options` (which ends of the model this stage holds), loads it through `checkpoint_slice` and
`checkpoint_key`, calls `parallelize` after loading, agrees on the KV cache size with `min_over_ranks`, and,
on rank 0, hands each step to `send_step` before running it; with pipeline stages `pipeline` runs its steps
(pipeline_step.py). Keeping these behind one object keeps model_runner.py's changes to one line each.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.parallel import state
from modelgate.backends.llm.parallel.sharding import Shard
from modelgate.backends.llm.parallel.stages import StageLayers


@dataclass(frozen=True)
class RankShard:
    model_config: DecoderConfig  # this rank's (the whole model's in one process)
    shard: Shard | None = None  # None without tensor parallelism
    tp: state.TensorParallel | None = None
    stage: StageLayers | None = None  # None without pipeline parallelism

    @classmethod
    def of_this_process(cls, full: DecoderConfig) -> RankShard:
        tp = state.current()
        if tp is None:
            return cls(full)
        shard = Shard(full, tp.tp_rank, tp.tp_size) if tp.tp_size > 1 else None
        config = full if shard is None else shard.local_config()
        stage = StageLayers(full, tp.stage, tp.num_stages) if tp.num_stages > 1 else None
        if stage is not None:
            config = stage.local_config(config)
        return cls(config, shard, tp, stage)

    @property
    def model_options(self) -> dict:
        """DecoderForCausalLM's keyword arguments for this stage (none without pipeline parallelism)."""
        if self.stage is None:
            return {}
        return {"is_first_stage": self.stage.is_first, "is_last_stage": self.stage.is_last}

    @property
    def checkpoint_slice(self):
        """For load_weights: this rank's slice of each checkpoint tensor (None: load everything)."""
        return None if self.shard is None else self.shard.checkpoint_slice

    @property
    def checkpoint_key(self):
        """For load_weights: this stage's name for each checkpoint key, None for other stages' (None: all)."""
        return None if self.stage is None else self.stage.checkpoint_key

    @property
    def pipeline(self):
        """This rank's PipelineStage, which runs its steps; None without pipeline parallelism."""
        if self.stage is None:
            return None
        from modelgate.backends.llm.parallel.pipeline import PipelineStage

        return PipelineStage(self.tp)

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
