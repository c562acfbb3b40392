"""Load on demand with LRU eviction (`--model-load-on-demand`, explicit mode).

A request (or a metadata/config call) naming a model of the repository that is not loaded loads it and waits
until it is ready; concurrent requests for it share that one load. A load that does not fit in a device's
memory limit (the ledger's InsufficientMemoryError) unloads the least recently used idle model that holds
memory on that device and tries again, until it fits or nothing is left to evict (then it is refused, and
the refusal counted). Idle: no request in flight, from the moment a request names its model (waiting for its load
included) until its response (or stream) ended, so no request is ever lost to an eviction; a load that
needs room while every model it could evict is busy waits (up to EVICTION_WAIT_S) for one to become idle. Pinned models (`--pin-model`) are
never evicted. A model whose last load failed is not loaded again by requests (load it explicitly).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from modelgate.core.errors import ModelgateError, NotFoundError, UnavailableError
from modelgate.server.loaded_model import LoadedVersion
from modelgate.server.memory.device_memory import MemoryDevice
from modelgate.server.memory.ledger import InsufficientMemoryError, MemoryLedger
from modelgate.server.model_manager import ModelManager

logger = logging.getLogger(__name__)

EVICTION_WAIT_S = 60.0  # how long a load that needs room waits for a busy model to become idle


class ModelResidency:
    def __init__(self, manager: ModelManager, ledger: MemoryLedger, pinned: Iterable[str], registry: CollectorRegistry):
        self.manager = manager
        self.ledger = ledger
        self.pinned = set(pinned)
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._refused: set[str] = set()  # models whose last load on demand found no room
        self._became_idle = asyncio.Event()  # a model's last request in flight ended
        self.loads = _counter("modelgate_model_loads_on_demand", "Models loaded because a request named them", registry)
        self.evictions = _counter("modelgate_model_evictions", "Models unloaded to make room for another", registry)
        self.refusals = _counter(
            "modelgate_model_load_refusals", "Loads refused: too little memory, nothing left to evict", registry
        )

    # -- requests ------------------------------------------------------------------------------------------

    async def serving(self, name: str, version: str = "") -> LoadedVersion:
        """The serving version of `name`, loaded first if the repository has it and it is not loaded."""
        try:
            return self.manager.resolve(name, version)
        except (NotFoundError, UnavailableError):
            broken = self.manager.load_failed(name) and name not in self._refused and name not in self._loading
            if broken or not self._in_repository(name):
                raise
        task = self._loading.get(name)
        if task is None:
            task = asyncio.ensure_future(self._load_on_demand(name))
            self._loading[name] = task
            task.add_done_callback(lambda _: self._loading.pop(name, None))
        await asyncio.shield(task)  # one request leaving does not cancel the load the others wait for
        return self.manager.resolve(name, version)

    def begin(self, name: str) -> None:
        """A request for `name` is in flight (it found its model): no eviction until `end`."""
        self._in_flight[name] = self._in_flight.get(name, 0) + 1
        self._last_used[name] = asyncio.get_running_loop().time()

    def end(self, name: str) -> None:
        left = self._in_flight[name] - 1
        if left:
            self._in_flight[name] = left
        else:
            del self._in_flight[name]
            self._became_idle.set()

    # -- loads ---------------------------------------------------------------------------------------------

    async def load(self, name: str, load=None) -> None:
        """Load `name` (by `load()`, default the manager's), evicting least recently used idle models while it
        does not fit; InsufficientMemoryError (counted) once nothing is left to evict."""
        load = load or (lambda: self.manager.load(name))
        deadline = asyncio.get_running_loop().time() + EVICTION_WAIT_S
        while True:
            try:
                await load()
                return
            except InsufficientMemoryError as exc:
                refusal = exc
            victim = self._victim(refusal.device, keep=name, idle=True)
            if victim is not None:
                logger.info("evicting model '%s' (least recently used) to make room for '%s'", victim, name)
                await self.manager.evict(victim)
                self.evictions.labels(victim).inc()
                continue
            # Room could be made once a model's requests end: wait for that, not for ever.
            left = deadline - asyncio.get_running_loop().time()
            if self._victim(refusal.device, keep=name, idle=False) is None or left <= 0:
                self.refusals.labels(name).inc()
                why = "no idle model to evict" if left > 0 else f"no model became idle within {EVICTION_WAIT_S:g} s"
                raise InsufficientMemoryError(f"{refusal.message}; {why}", refusal.device) from None
            self._became_idle.clear()
            try:
                await asyncio.wait_for(self._became_idle.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def _load_on_demand(self, name: str) -> None:
        logger.info("loading model '%s' on demand", name)
        try:
            await self.load(name)
        except InsufficientMemoryError:
            self._refused.add(name)  # unlike a broken model, one refused for room is tried again by requests
            raise
        self._refused.discard(name)
        self.loads.labels(name).inc()

    def _victim(self, device: MemoryDevice, keep: str, idle: bool) -> str | None:
        """The least recently used model holding memory on `device` that may be evicted: now (`idle`), or once
        its requests have ended."""
        holders = {h.holder.model for h in self.ledger.holdings(device)}
        candidates = [
            model
            for model in holders
            if model != keep
            and model not in self.pinned
            and (not idle or (model not in self._in_flight and self.manager.ready_versions(model)))
        ]
        return min(candidates, key=lambda model: self._last_used.get(model, 0.0), default=None)

    def _in_repository(self, name: str) -> bool:
        try:
            self.manager.layout.locate(name)
            return True
        except ModelgateError:  # not found, or in two repositories: the request gets the resolve error
            return False


def _counter(name: str, documentation: str, registry: CollectorRegistry) -> Counter:
    return Counter(name, documentation, ("model",), registry=registry)
