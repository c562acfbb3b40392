"""The server's one rate limiter: executions of every model's instances start only when their resources are free.

Contract (all methods run on the event loop; nothing here blocks it):
- `register` sizes the resources for a version's instances before they load, and refuses the load (as Triton,
  in Triton's words) when a count given on the command line is below what an instance needs, or when one name
  is global for one model and per device for another. `unregister` forgets them once unloaded; resources sized
  by default (the largest need of the registered instances) shrink again.
- `acquire(instance)` waits until the instance may start one execution and allocates its resources;
  `release(instance)` frees them when the execution is over, also after an error or a cancellation, and also
  for an instance unregistered meanwhile. Every `acquire` that returns is matched by exactly one `release`.
- Choosing among waiting instances: the one with the lowest pass goes first (ties: the longest waiting), and
  each start adds its priority to its pass, so an instance of priority 2 starts half as often as one of
  priority 1 while both wait (Triton: "configured priority and the number of times the instance has been
  used"). An instance that starts waiting again after a pause joins at the pass of the last start, so idle
  time earns no credit. An instance never overtakes a better-placed waiting one on a resource they share: a
  big need is not starved by small ones; instances that share no resource do not hold each other up.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass, field

from modelgate.backends.base import InstanceLoadError, InstanceSpec
from modelgate.core.errors import UnavailableError
from modelgate.server.rate_limiter.instance_needs import InstanceNeeds, instance_group_name, needs_by_group
from modelgate.server.rate_limiter.resource_flags import FLAG, ExplicitResources

# (name, device); device None for a global resource.
ResourceKey = tuple[str, int | None]


@dataclass(eq=False)
class LimitedInstance:
    """One registered instance: what an execution of it holds, and its place in the order of starts."""

    model_name: str
    instance_name: str
    device: int
    needs: InstanceNeeds
    demand: dict[ResourceKey, int]
    passes: int = 0  # the sum of its priority over its starts (plus catch-up: see the module docstring)
    waiters: collections.deque = field(default_factory=collections.deque)  # (arrival, future), oldest first


class RateLimiter:
    def __init__(self, explicit: ExplicitResources | None = None):
        self.explicit = explicit or ExplicitResources()
        self._instances: list[LimitedInstance] = []
        self._capacity: dict[ResourceKey, int] = {}
        self._in_use: collections.Counter[ResourceKey] = collections.Counter()
        self._last_start_pass = 0
        self._arrivals = itertools.count()

    # -- registration ----------------------------------------------------------------------

    def register(self, specs: list[InstanceSpec]) -> list[LimitedInstance | None]:
        """One entry per spec: its LimitedInstance, or None for an instance that lists no resources (it never
        waits). Raises InstanceLoadError, registering nothing, where the resources cannot serve them."""
        limited: list[LimitedInstance | None] = []
        for spec in specs:
            needs = needs_by_group(spec.config).get(instance_group_name(spec.instance_name), InstanceNeeds())
            if not needs.is_limited:
                limited.append(None)
                continue
            demand = {(name, spec.device_id): count for name, count in needs.per_device.items()}
            demand.update({(name, None): count for name, count in needs.shared.items()})
            limited.append(LimitedInstance(spec.model_name, spec.instance_name, spec.device_id, needs, demand))
        added = [instance for instance in limited if instance is not None]
        candidates = self._instances + added
        _check_scopes(candidates)
        capacity = self._sized(candidates)
        for instance in added:
            for key, count in instance.demand.items():
                if capacity[key] < count:
                    raise InstanceLoadError(_shortage(instance, key, capacity[key], count))
        self._instances, self._capacity = candidates, capacity
        self._start_waiting_executions()  # a larger default size may let waiting executions start
        return limited

    def unregister(self, instances: list[LimitedInstance | None]) -> None:
        """Forget unloaded instances; their executions still running release as usual."""
        gone = {id(instance) for instance in instances if instance is not None}
        self.refuse_waiting(instances, "is unloading")
        self._instances = [instance for instance in self._instances if id(instance) not in gone]
        self._capacity = self._sized(self._instances)
        self._start_waiting_executions()

    def capacity(self, name: str, device: int | None) -> int:
        """The copies of a resource (device None: a global one) that registered instances may hold at once."""
        return self._capacity.get((name.lower(), device), 0)

    def in_use(self, name: str, device: int | None) -> int:
        return self._in_use[(name.lower(), device)]

    # -- executions ------------------------------------------------------------------------

    async def acquire(self, instance: LimitedInstance) -> None:
        """Wait until `instance` may start one execution and allocate its resources; pair with `release`.
        Raises UnavailableError if the instance is unloaded meanwhile. Cancellation leaves nothing allocated."""
        if not instance.waiters:
            instance.passes = max(instance.passes, self._last_start_pass)
        waiter = asyncio.get_running_loop().create_future()
        instance.waiters.append((next(self._arrivals), waiter))
        self._start_waiting_executions()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(instance)  # allocated just as the caller gave up: give it back
            else:
                self._start_waiting_executions()  # it may have held others back
            raise

    def release(self, instance: LimitedInstance) -> None:
        """Free what one execution of `instance` held, and start the waiting executions that now fit."""
        self._in_use.subtract(instance.demand)
        self._start_waiting_executions()

    def refuse_waiting(self, instances: list[LimitedInstance | None], why: str) -> None:
        """Fail the executions of `instances` still waiting (their model is unloading) with UnavailableError."""
        for instance in instances:
            if instance is None:
                continue
            while instance.waiters:
                _, waiter = instance.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(UnavailableError(f"model '{instance.model_name}' {why}; retry the request"))
        self._start_waiting_executions()

    # -- internals -------------------------------------------------------------------------

    def _start_waiting_executions(self) -> None:
        while (instance := self._next_to_start()) is not None:
            _, waiter = instance.waiters.popleft()
            self._in_use.update(instance.demand)
            self._last_start_pass = instance.passes
            instance.passes += instance.needs.priority
            waiter.set_result(None)

    def _next_to_start(self) -> LimitedInstance | None:
        """The best-placed waiting instance whose resources are free, unless a better-placed one that waits
        for some of the same resources would be overtaken."""
        held_back: set[ResourceKey] = set()
        for instance in sorted(self._waiting(), key=lambda i: (i.passes, i.waiters[0][0])):
            if held_back.isdisjoint(instance.demand) and self._fits(instance):
                return instance
            held_back.update(instance.demand)
        return None

    def _waiting(self) -> list[LimitedInstance]:
        waiting = []
        for instance in self._instances:
            while instance.waiters and instance.waiters[0][1].done():  # cancelled or refused
                instance.waiters.popleft()
            if instance.waiters:
                waiting.append(instance)
        return waiting

    def _fits(self, instance: LimitedInstance) -> bool:
        return all(self._in_use[key] + count <= self._capacity.get(key, 0) for key, count in instance.demand.items())

    def _sized(self, instances: list[LimitedInstance]) -> dict[ResourceKey, int]:
        """Each resource's copies: the command line's count, else the largest need of any instance listing it
        (on any device: Triton's 'max across all model instances that list that resource')."""
        largest: dict[tuple[str, bool], int] = {}
        for instance in instances:
            for (name, device), count in instance.demand.items():
                scope = (name, device is None)
                largest[scope] = max(largest.get(scope, 0), count)
        capacity = {}
        for instance in instances:
            for key in instance.demand:
                name, device = key
                given = self.explicit.shared(name) if device is None else self.explicit.per_device(name, device)
                capacity[key] = largest[(name, device is None)] if given is None else given
        return capacity


def _check_scopes(instances: list[LimitedInstance]) -> None:
    first: dict[str, LimitedInstance] = {}
    for instance in instances:
        for name, device in instance.demand:
            other = first.setdefault(name, instance)
            if (device is None) != (name in other.needs.shared):
                raise InstanceLoadError(
                    f'Resource "{name}" is present as both global and device-specific resource in the model '
                    f"configuration (model '{other.model_name}' instance '{other.instance_name}' and model "
                    f"'{instance.model_name}' instance '{instance.instance_name}'); a resource is either global or "
                    f"per device in every model"
                )


def _shortage(instance: LimitedInstance, key: ResourceKey, available: int, needed: int) -> str:
    name, device = key
    where = "global resource" if device is None else f"resource on device {device}"
    return (
        f'Resource count for "{name}" is limited to {available} which will prevent scheduling of one or more model '
        f"instances, the minimum required count is {needed} (instance '{instance.instance_name}' of model "
        f"'{instance.model_name}' needs {needed} of the {where}; raise it with {FLAG} {name}:{needed})"
    )
