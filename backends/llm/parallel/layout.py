"""Where each rank sits when tensor and pipeline parallelism compose: world = tp × pp ranks.

Rank r is tensor-parallel rank `r % tp` of pipeline stage `r // tp`:

    tp=2, pp=2:   stage 0: ranks 0, 1      stage 1: ranks 2, 3

so a stage's tensor-parallel ranks are consecutive, and on GPUs (rank r on cuda:<first + r>) they sit on
neighbouring devices, where the all-reduces after every layer run; the pipeline's one transfer per stage
per micro-batch crosses the farther link. Rank 0 is the driver (scheduler, sampling, the server's pipes):
tensor-parallel rank 0 of the first stage. Hidden states go from rank (s, t) to rank (s + 1, t): every
tensor-parallel rank of a stage holds the whole (all-reduced) hidden state, so each hands it to its
counterpart and no stage needs a broadcast. The last stage's tensor-parallel rank 0 sends the logits to rank 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelLayout:
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def stage_of(self, rank: int) -> int:
        return rank // self.tensor_parallel_size

    def tp_rank_of(self, rank: int) -> int:
        return rank % self.tensor_parallel_size

    def rank_of(self, stage: int, tp_rank: int) -> int:
        return stage * self.tensor_parallel_size + tp_rank

    def stage_ranks(self, stage: int) -> list[int]:
        """The tensor-parallel ranks of `stage`, in tensor-parallel order."""
        return [self.rank_of(stage, t) for t in range(self.tensor_parallel_size)]

    @property
    def logits_rank(self) -> int:
        """The rank that sends the logits to rank 0: tensor-parallel rank 0 of the last stage."""
        return self.rank_of(self.pipeline_parallel_size - 1, 0)
