"""Rank 0's scheduled step, broadcast to the other ranks as one int64 tensor on the gloo step group.

Why a tensor and not `broadcast_object_list`: the step is a few lists of integers; packed, it is two gloo
broadcasts of host memory (its length, then itself), with no pickling and no device copies (on GPUs the
object path stages the pickle through device memory, with syncs, every step). What a worker needs of each
scheduled request is what the model runner reads: where its new tokens start, how many there are, whether the
step samples it, the new tokens themselves and its block table. Workers rebuild ScheduledRequests from that
(with a stand-in request holding only the new tokens) and run the runner's own `forward_step` on them, so
every rank takes the same path (eager, decode graph or piecewise step graph) and meets the same collectives.

Layout: [num_seqs, (num_computed, num_new, samples, num_blocks) * num_seqs, new tokens..., block ids...];
num_seqs STOP ends the worker.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from modelgate.backends.llm.parallel.state import TensorParallel
from modelgate.backends.llm.scheduler import ScheduledRequest
from modelgate.backends.llm.step_layout import token_slice

STOP = -1
_FIELDS = 4


class _StepRequest:
    """The part of an LLMRequest the model runner reads for one step: its new tokens, as if they were the
    output tokens after a prompt that ends where they start (step_layout's token_slice and decode_rows then
    find exactly them)."""

    __slots__ = ("num_prompt_tokens", "prompt_token_ids", "output_token_ids", "num_tokens")

    def __init__(self, num_computed: int, new_token_ids: list[int], samples: bool):
        self.num_prompt_tokens = num_computed
        self.prompt_token_ids: list[int] = []
        self.output_token_ids = new_token_ids
        # ScheduledRequest.samples is computed from this: the step reaches the last token, or falls short of it.
        self.num_tokens = num_computed + len(new_token_ids) + (0 if samples else 1)


def encode(scheduled: list[ScheduledRequest]) -> torch.Tensor:
    header, tokens, blocks = [len(scheduled)], [], []
    for item in scheduled:
        start = item.num_computed_tokens
        header += (start, item.num_new_tokens, int(item.samples), len(item.block_ids))
        tokens += token_slice(item.request, start, start + item.num_new_tokens)
        blocks += item.block_ids
    return torch.tensor(header + tokens + blocks, dtype=torch.int64)


def decode(message: torch.Tensor) -> list[ScheduledRequest]:
    values = message.tolist()
    num_seqs = values[0]
    fields = values[1 : 1 + _FIELDS * num_seqs]
    token_at = 1 + _FIELDS * num_seqs
    block_at = token_at + sum(fields[1::_FIELDS])
    scheduled = []
    for i in range(num_seqs):
        start, num_new, samples, num_blocks = fields[_FIELDS * i : _FIELDS * (i + 1)]
        request = _StepRequest(start, values[token_at : token_at + num_new], bool(samples))
        scheduled.append(ScheduledRequest(request, start, num_new, values[block_at : block_at + num_blocks]))
        token_at += num_new
        block_at += num_blocks
    return scheduled


def send_step(tp: TensorParallel, scheduled: list[ScheduledRequest]) -> None:
    """Rank 0: the step every other rank runs now."""
    _broadcast(tp, encode(scheduled))


def send_stop(tp: TensorParallel) -> None:
    _broadcast(tp, torch.tensor([STOP], dtype=torch.int64))


def receive_step(tp: TensorParallel) -> list[ScheduledRequest] | None:
    """Other ranks: wait for rank 0's next step; None when it says stop."""
    length = torch.zeros(1, dtype=torch.int64)
    dist.broadcast(length, src=0, group=tp.step_group)
    message = torch.empty(int(length.item()), dtype=torch.int64)
    dist.broadcast(message, src=0, group=tp.step_group)
    return None if message[0].item() == STOP else decode(message)


def _broadcast(tp: TensorParallel, message: torch.Tensor) -> None:
    dist.broadcast(torch.tensor([message.numel()], dtype=torch.int64), src=0, group=tp.step_group)
    dist.broadcast(message, src=0, group=tp.step_group)
