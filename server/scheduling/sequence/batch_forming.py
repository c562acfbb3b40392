"""Which queued requests of one instance's sequences run together next, and whether to wait for more.

At most one request of a sequence joins a batch (its requests run in order), and only requests whose inputs
have the same non-batch shapes as the first one chosen (framework backends concatenate them).

- direct: each request sits at its sequence's slot index; free slots below the highest one used are padding
  (None), which the batcher fills with READY=false requests. The batch runs as soon as one slot is ready, or,
  with `minimum_slot_utilization` set, once that share of the slots is ready or the oldest request has waited
  `max_queue_delay_microseconds`.
- oldest: the requests whose sequences queued first, up to max_batch_size; the batch runs at once when it is
  full or reaches the largest preferred size, else when the oldest request has waited the queue delay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from modelgate.server.scheduling.sequence.sequence_config import SequenceConfig
from modelgate.server.scheduling.sequence.sequence_table import Sequence

Signature = Callable[[object], tuple]  # a request's non-batch input shapes


@dataclass(frozen=True)
class BatchChoice:
    """`batch` (sequences by position; None: padding) to run now, or `wait_ns` to wait for more first."""

    batch: list[Sequence | None]
    wait_ns: int = 0


def choose_batch(holders: list[Sequence], config: SequenceConfig, signature: Signature) -> BatchChoice:
    """The next batch of an idle instance whose slots `holders` hold (by slot index)."""
    ready = [s for s in holders if s.queue]
    if not ready:
        return BatchChoice([])
    if config.is_oldest:
        return _oldest(ready, config, signature)
    return _direct(ready, config, signature)


def _direct(ready: list[Sequence], config: SequenceConfig, signature: Signature) -> BatchChoice:
    first = signature(ready[0].queue[0].request)
    by_slot = {s.slot[1]: s for s in ready if signature(s.queue[0].request) == first}
    batch = [by_slot.get(index) for index in range(max(by_slot) + 1)]
    if not config.min_slot_utilization or len(by_slot) >= config.min_slot_utilization * config.slots_per_instance:
        return BatchChoice(batch)
    return BatchChoice(batch, _remaining_delay(ready, config))


def _oldest(ready: list[Sequence], config: SequenceConfig, signature: Signature) -> BatchChoice:
    ready.sort(key=lambda s: s.queue[0].arrival_ns)
    first = signature(ready[0].queue[0].request)
    batch = [s for s in ready if signature(s.queue[0].request) == first][: config.max_batch_size]
    largest_preferred = config.preferred_sizes[-1] if config.preferred_sizes else None
    if largest_preferred is not None and len(batch) >= largest_preferred:
        return BatchChoice(batch[:largest_preferred])
    if len(batch) >= config.max_batch_size:
        return BatchChoice(batch)
    return BatchChoice(batch, _remaining_delay(ready, config))


def _remaining_delay(ready: list[Sequence], config: SequenceConfig) -> int:
    """How long the oldest ready request still may wait (0: run now)."""
    oldest = min(s.queue[0].arrival_ns for s in ready)
    return max(0, config.max_delay_ns - (time.monotonic_ns() - oldest))
