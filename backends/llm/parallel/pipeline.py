"""The pipeline's point-to-point traffic: hidden states stage to stage, logits from the last stage to rank 0.

Every transfer is asynchronous (isend/irecv on the default group: NCCL on GPUs, gloo on the CPU): a stage
hands micro-batch m on and goes straight to m + 1, which is what keeps the stages busy at once. A send's
tensor must stay untouched until its work is waited for; `Transfers` keeps them alive until then.

Both ends know every size beforehand, from the step they all received (step_channel.py): a micro-batch's
tokens give its hidden states' shape, its sampling rows its logits' shape; nothing about sizes is sent.

Order, so that NCCL cannot deadlock: its point-to-point ops between a pair of ranks run in the order they
were issued, on one stream, and a send of any size may wait for its receive. A stage receives micro-batch m
before it sends m; rank 0 issues every send of the step before it receives the logits; the last stage sends
the logits once, after its last receive. With two stages rank 0 and the last stage are each other's only
peer: rank 0 issues sends h0..hM then receive L, the last stage receives h0..hM then sends L, which pair
up in order. (Had the last stage sent the logits of micro-batch 0 before receiving h1, both ranks would wait
in a send.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from modelgate.backends.llm.parallel.state import TensorParallel

# gloo matches a receive with a send by source and tag: the two kinds of traffic never mix, even where rank 0
# and the last stage are each other's only peer. NCCL ignores tags and keeps the issue order.
HIDDEN_TAG = 1
LOGITS_TAG = 2


@dataclass
class Transfers:
    """Sends in flight; `wait` before their tensors may be reused or the step ends."""

    works: list = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)

    def add(self, work, tensor: torch.Tensor) -> None:
        self.works.append(work)
        self.tensors.append(tensor)

    def wait(self) -> None:
        for work in self.works:
            work.wait()
        self.works.clear()
        self.tensors.clear()


@dataclass(frozen=True)
class PipelineStage:
    """This rank's stage and its neighbours."""

    state: TensorParallel

    @property
    def is_first(self) -> bool:
        return self.state.stage == 0

    @property
    def is_last(self) -> bool:
        return self.state.stage == self.state.num_stages - 1

    @property
    def sends_logits(self) -> bool:
        return self.state.rank == self.state.layout.logits_rank

    def send_hidden(self, hidden: torch.Tensor, residual: torch.Tensor, transfers: Transfers) -> None:
        """To the next stage's rank of this tensor-parallel rank: hidden and residual [num_tokens, hidden_size],
        as one [2, num_tokens, hidden_size] tensor (one transfer)."""
        layout = self.state.layout
        peer = layout.rank_of(self.state.stage + 1, self.state.tp_rank)
        both = torch.stack((hidden, residual))
        transfers.add(dist.isend(both, peer, tag=HIDDEN_TAG), both)

    def receive_hidden(self, num_tokens: int, hidden_size: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """From the previous stage: (hidden, residual) [num_tokens, hidden_size] each."""
        layout = self.state.layout
        peer = layout.rank_of(self.state.stage - 1, self.state.tp_rank)
        both = torch.empty((2, num_tokens, hidden_size), dtype=dtype, device=device)
        dist.irecv(both, peer, tag=HIDDEN_TAG).wait()
        return both[0], both[1]

    def send_logits(self, logits: torch.Tensor, transfers: Transfers) -> None:
        """Last stage, tensor-parallel rank 0: the step's float32 logits [num_sampled, vocab] to rank 0."""
        logits = logits.contiguous()
        transfers.add(dist.isend(logits, 0, tag=LOGITS_TAG), logits)

    def receive_logits(self, num_rows: int, vocab_size: int, device) -> torch.Tensor:
        """Rank 0: the step's float32 logits [num_rows, vocab_size] from the last stage."""
        logits = torch.empty((num_rows, vocab_size), dtype=torch.float32, device=device)
        dist.irecv(logits, self.state.layout.logits_rank, tag=LOGITS_TAG).wait()
        return logits
