"""The sequences of one model version: who holds which slot, what each has queued, which wait for a slot.

A slot is (instance, index): a sequence keeps the one it was given from its START until it ends or is released
as idle, so every request of it runs on that instance (direct: at that batch position). The free slot with the
lowest index goes first, the instances taking turns: new sequences spread over the instances, and a direct
batch stays as short as the sequences allow (it is padded up to its highest slot). A sequence that finds no free slot waits in the backlog, its requests queued,
and takes the first slot freed (first come, first served).
"""

from __future__ import annotations

import collections
import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from modelgate.server.scheduling.sequence.correlation import SequenceFlags
from modelgate.server.scheduling.sequence.implicit_state import StateTensors

REMEMBERED_RELEASES = 4096  # ids of sequences released as idle, kept to say so when a late request comes


@dataclass(eq=False)
class SequenceEntry:
    """A queued request of a sequence; `future` is None for a streamed request."""

    request: Any  # InferRequest
    flags: SequenceFlags
    future: Any
    arrival_ns: int = field(default_factory=time.monotonic_ns)


@dataclass(eq=False)
class Sequence:
    key: tuple
    slot: tuple[int, int] | None = None  # (instance, index); None while in the backlog
    queue: collections.deque = field(default_factory=collections.deque)
    states: StateTensors | None = None
    awaits_start: bool = False  # its last queued request has the END flag: only a new START may follow
    is_executing: bool = False
    idle_since_ns: int = field(default_factory=time.monotonic_ns)

    @property
    def is_idle(self) -> bool:
        return not self.queue and not self.is_executing


class SequenceTable:
    def __init__(self, num_instances: int, slots_per_instance: int):
        self._free = [(index, i) for index in range(slots_per_instance) for i in range(num_instances)]  # a heap
        self.sequences: dict[tuple, Sequence] = {}
        self.holders: dict[int, dict[int, Sequence]] = {i: {} for i in range(num_instances)}  # instance -> slot ->
        self.backlog: collections.deque[Sequence] = collections.deque()
        self.released_idle: collections.OrderedDict[tuple, None] = collections.OrderedDict()

    def get(self, key: tuple) -> Sequence | None:
        return self.sequences.get(key)

    def start(self, key: tuple) -> Sequence:
        """A new sequence, in a free slot or else in the backlog."""
        sequence = Sequence(key)
        self.sequences[key] = sequence
        self.released_idle.pop(key, None)
        if self._free:
            index, instance = heapq.heappop(self._free)
            self._seat(sequence, (instance, index))
        else:
            self.backlog.append(sequence)
        return sequence

    def release(self, sequence: Sequence, was_idle: bool = False) -> Sequence | None:
        """Forget `sequence` and free its slot; returns the backlog sequence that took the slot, if any."""
        self.sequences.pop(sequence.key, None)
        if was_idle:
            self.released_idle[sequence.key] = None
            if len(self.released_idle) > REMEMBERED_RELEASES:
                self.released_idle.popitem(last=False)
        slot, sequence.slot = sequence.slot, None
        if slot is None:
            return None
        del self.holders[slot[0]][slot[1]]
        if self.backlog:
            admitted = self.backlog.popleft()
            self._seat(admitted, slot)
            return admitted
        heapq.heappush(self._free, (slot[1], slot[0]))
        return None

    def on_instance(self, instance: int) -> list[Sequence]:
        """The sequences holding a slot of `instance`, by slot index."""
        holders = self.holders[instance]
        return [holders[index] for index in sorted(holders)]

    def idle_sequences(self) -> list[Sequence]:
        """Sequences holding a slot with nothing queued or running."""
        return [s for holders in self.holders.values() for s in holders.values() if s.is_idle]

    def _seat(self, sequence: Sequence, slot: tuple[int, int]) -> None:
        sequence.slot = slot
        self.holders[slot[0]][slot[1]] = sequence
