"""Splitting a step's sequences into the micro-batches that flow through the pipeline one after another.

Contiguous runs of the scheduled order: the logits then come back in the order the sampler expects (each
micro-batch's sampled rows in order, micro-batch after micro-batch), and a sequence never splits, so its
attention sees its whole step at once. Runs are balanced by new tokens, because a stage's time grows with
them: a prefill chunk of 500 tokens and 30 one-token decodes make two runs of about even work, not even counts.

Why splitting is safe for the KV cache: a step's sequences write disjoint slots, and the prefix cache only
shares blocks that an earlier step filled (KVCacheManager.cache_full_blocks runs after a step), so no
micro-batch reads what another one of the same step writes.
"""

from __future__ import annotations

from modelgate.backends.llm.scheduler import ScheduledRequest


def split_micro_batches(scheduled: list[ScheduledRequest], num_stages: int) -> list[list[ScheduledRequest]]:
    """`scheduled` as min(num_stages, len(scheduled)) contiguous, non-empty runs of about equal new tokens."""
    count = min(num_stages, len(scheduled))
    if count <= 1:
        return [scheduled]
    total = sum(item.num_new_tokens for item in scheduled)
    batches: list[list[ScheduledRequest]] = [[]]
    done = 0
    for index, item in enumerate(scheduled):
        batch = batches[-1]
        remaining_items, remaining_batches = len(scheduled) - index, count - len(batches)
        # Close this run when it has its share of the tokens, or when the rest must each start a run of their own.
        full = done >= total * len(batches) / count or remaining_items == remaining_batches
        if batch and full and remaining_batches > 0:
            batches.append([])
        batches[-1].append(item)
        done += item.num_new_tokens
    return batches
