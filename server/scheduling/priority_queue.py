"""The dynamic batcher's queue: priority levels, each with Triton's queue policy.

Level 1 is the highest priority. A level's policy bounds its size (`max_queue_size`,
overflow is refused with UNAVAILABLE) and times its requests out: REJECT fails them,
DELAY moves them behind every request that has not timed out.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc.model_config_pb2 import ModelDynamicBatching, ModelQueuePolicy

from modelgate.core.errors import InvalidArgumentError, UnavailableError


@dataclass(eq=False)
class QueuedRequest:
    request: Any  # InferRequest
    batch_size: int
    future: Any  # asyncio.Future for the response, or None for a streamed request
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    deadline_ns: int | None = None
    level: int = 1


@dataclass(frozen=True)
class _Policy:
    timeout_action_delay: bool
    default_timeout_us: int
    allow_timeout_override: bool
    max_queue_size: int  # 0: unbounded


def _policy(proto: ModelQueuePolicy) -> _Policy:
    return _Policy(
        proto.timeout_action == ModelQueuePolicy.DELAY,
        proto.default_timeout_microseconds,
        proto.allow_timeout_override,
        proto.max_queue_size,
    )


class PriorityQueue:
    def __init__(self, config: ModelDynamicBatching, model_name: str):
        self.model_name = model_name
        self.uses_priorities = config.priority_levels > 0
        self.num_levels = max(1, config.priority_levels)
        self.default_level = config.default_priority_level or (self.num_levels + 1) // 2
        if config.priority_levels == 0:
            self.default_level = 1
        default = _policy(config.default_queue_policy)
        self.policies = {
            level: _policy(config.priority_queue_policy[level]) if level in config.priority_queue_policy else default
            for level in range(1, self.num_levels + 1)
        }
        self.levels: dict[int, deque[QueuedRequest]] = {level: deque() for level in self.policies}
        self.delayed: deque[QueuedRequest] = deque()

    def __len__(self) -> int:
        return sum(len(q) for q in self.levels.values()) + len(self.delayed)

    def add(self, entry: QueuedRequest) -> None:
        """Queue `entry` at its request's priority; raises if the level is full or the priority is bad."""
        entry.level = self._level(entry.request.parameters.get("priority", 0))
        policy = self.policies[entry.level]
        if policy.max_queue_size and len(self.levels[entry.level]) >= policy.max_queue_size:
            raise UnavailableError(
                f"model '{self.model_name}': the queue of priority level {entry.level} is full "
                f"(max_queue_size {policy.max_queue_size}); retry later"
            )
        timeout_us = policy.default_timeout_us
        requested = entry.request.parameters.get("timeout")
        if requested is not None and policy.allow_timeout_override:
            timeout_us = _non_negative_int(requested, "timeout")
        if timeout_us:
            entry.deadline_ns = entry.arrival_ns + timeout_us * 1000
        self.levels[entry.level].append(entry)

    def expire(self, now_ns: int) -> list[QueuedRequest]:
        """Apply timeouts: DELAY levels move expired entries back; REJECT ones are returned."""
        rejected = []
        for level, queue in self.levels.items():
            delay = self.policies[level].timeout_action_delay
            kept = deque()
            for entry in queue:
                if entry.deadline_ns is None or entry.deadline_ns > now_ns:
                    kept.append(entry)
                elif delay:
                    entry.deadline_ns = None
                    self.delayed.append(entry)
                else:
                    rejected.append(entry)
            self.levels[level] = kept
        return rejected

    def ordered(self):
        """Entries in the order they are served: by level, arrival within a level, delayed last."""
        for level in sorted(self.levels):
            yield from self.levels[level]
        yield from self.delayed

    def remove(self, entries: list[QueuedRequest]) -> None:
        taken = set(map(id, entries))
        for level in self.levels:
            self.levels[level] = deque(e for e in self.levels[level] if id(e) not in taken)
        self.delayed = deque(e for e in self.delayed if id(e) not in taken)

    def oldest_arrival_ns(self) -> int | None:
        arrivals = [q[0].arrival_ns for q in self.levels.values() if q] + [e.arrival_ns for e in self.delayed]
        return min(arrivals) if arrivals else None

    def next_deadline_ns(self) -> int | None:
        deadlines = [e.deadline_ns for q in self.levels.values() for e in q if e.deadline_ns is not None]
        return min(deadlines) if deadlines else None

    def _level(self, priority) -> int:
        value = _non_negative_int(priority, "priority")
        if value == 0 or not self.uses_priorities:  # a model without priority levels ignores it, as Triton does
            return self.default_level
        if value > self.num_levels:
            raise InvalidArgumentError(
                f"priority {value} is out of range for model '{self.model_name}': "
                f"allowed are 1 (highest) to {self.num_levels}, or 0 for the default"
            )
        return value


def _non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"request parameter '{name}' must be a non-negative integer, got {value!r}")
    return value
