"""The instances of one model version, each bound to its own thread.

An instance is created, executes and is unloaded on its own single-thread executor, so a
model never sees two threads and the event loop never runs model code. `run` waits for a
free instance; `close` lets in-flight executions finish, then unloads every instance.

A pool made with `pipelined=True` (a scheduler that forms no batches) hands an instance up to its
`pipeline_depth` batches at once: each instance has that many slots. A batching scheduler gets one slot per
instance, so its batches grow while the instances are busy.

With the server's rate limiter (`--rate-limit execution_count`), holding an instance also means holding the
resources one execution of it needs: `acquire` waits for a free instance, then for its resources, and the
release after the execution frees both. Waiting for resources is waiting in the queue, as in Triton.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor

from modelgate.backends.base import Backend, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.core.errors import UnavailableError
from modelgate.core.inference_types import InferRequest
from modelgate.server.rate_limiter.rate_limiter import LimitedInstance, RateLimiter

logger = logging.getLogger(__name__)


class InstancePool:
    def __init__(self, specs: list[InstanceSpec], pipelined: bool = False, rate_limiter: RateLimiter | None = None):
        self.specs = specs
        self.pipelined = pipelined
        self.rate_limiter = rate_limiter
        # Per instance: its entry in the rate limiter (None: it waits for no resources), and how many of the
        # executions holding it hold its resources (a pipelined instance runs several; any one may end first).
        self._limited: list[LimitedInstance | None] = [None] * len(specs)
        self._num_held_resources = [0] * len(specs)
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"instance-{spec.instance_name}") for spec in specs
        ]
        self._instances: list[ModelInstance] = []
        self._free: list[int] = []
        # Requests waiting for an instance, oldest first: a freed instance goes straight to the
        # oldest one, so a request arriving later cannot overtake it (FIFO, bounded tail latency).
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._is_closing = False

    async def load(self, backend: Backend) -> None:
        """Create every instance on its thread; on any failure unload those made and raise. With a rate
        limiter, the instances' resources are checked (and the load refused) before any instance loads."""
        if self.rate_limiter is not None:
            self._limited = self.rate_limiter.register(self.specs)
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(ex, backend.load_instance, spec) for ex, spec in zip(self._executors, self.specs)),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self._instances = [r for r in results if not isinstance(r, BaseException)]
        if failures:
            await self._unload_instances()
            self._shutdown_executors()
            self._unregister()
            raise failures[0]
        # Interleaved: the first batches spread over the instances before any instance gets a second.
        depth = max((self._slots(instance) for instance in self._instances), default=1)
        self._free = [
            index
            for slot in reversed(range(depth))
            for index, instance in enumerate(self._instances)
            if slot < self._slots(instance)
        ]

    @property
    def instances(self) -> list[ModelInstance]:
        """The loaded instances, in the order of `specs`."""
        return self._instances

    def _slots(self, instance: ModelInstance) -> int:
        return max(1, int(instance.pipeline_depth)) if self.pipelined else 1

    async def run(self, requests: list[InferRequest], on_dispatch=None) -> tuple[ExecuteResult, int]:
        """Execute `requests` as one batch on the next free instance; (result, queue ns).

        `on_dispatch()` runs when an instance was found, i.e. when the requests stop waiting.
        """
        loop = asyncio.get_running_loop()
        waited_from = loop.time()
        try:
            index = await self.acquire()
        finally:
            if on_dispatch is not None:
                on_dispatch()
        queue_ns = int((loop.time() - waited_from) * 1e9)
        return await self.execute_on(index, requests), queue_ns

    async def acquire(self) -> int:
        """Wait (first come, first served) for a free instance (slot), then for the resources of one execution
        on it (rate limiter), and hold both; `execute_on` (or `release`) releases them."""
        index = await self._acquire_slot()
        try:
            await self.wait_for_resources(index)
        except BaseException:
            self._release_slot(index)
            raise
        return index

    async def _acquire_slot(self) -> int:
        if self._free and not self._waiters:
            index = self._free.pop()
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                index = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release_slot(waiter.result())  # handed over just as we were cancelled: pass it on
                raise
        if self._is_closing:
            # Never run a model after its unload was queued: the request fails, the model finalizes cleanly.
            self._release_slot(index)
            raise UnavailableError(f"model '{self.specs[0].model_name}' is unloading; retry the request")
        return index

    async def wait_for_resources(self, index: int) -> None:
        """Wait until instance `index` may start one execution (at once without a rate limiter or where it
        lists no resources) and hold its resources; `release_resources` frees them. `acquire` calls it; the
        sequence batcher, which keeps its instances, calls it before each batch. UnavailableError if the model
        unloads meanwhile."""
        limited = self._limited[index]
        if limited is None:
            return
        if self._is_closing:
            raise UnavailableError(f"model '{self.specs[0].model_name}' is unloading; retry the request")
        await self.rate_limiter.acquire(limited)
        self._num_held_resources[index] += 1

    def release_resources(self, index: int) -> None:
        """Free the resources one execution on instance `index` held (nothing if it held none)."""
        if self._num_held_resources[index]:
            self._num_held_resources[index] -= 1
            self.rate_limiter.release(self._limited[index])

    def release(self, index: int) -> None:
        """Give an instance back, with the resources its execution held: to the oldest waiting request, else
        to the free list."""
        self.release_resources(index)
        self._release_slot(index)

    def _release_slot(self, index: int) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(index)
                return
        self._free.append(index)

    async def execute_on(self, index: int, requests: list[InferRequest], release: bool = True) -> ExecuteResult:
        """Run one batch on the held instance `index`, then release it and its resources (unless `release` is
        false: the sequence batcher keeps each instance to itself, its sequences bound to it, never acquires
        one, and frees the resources it waited for itself)."""
        try:
            return await self._execute(index, requests)
        finally:
            if release:
                self.release(index)

    async def execute_before_serving(self, index: int, requests: list[InferRequest]) -> ExecuteResult:
        """Run one batch on instance `index` (the index in `specs`) while no scheduler uses the pool yet, e.g. a
        warm-up: it takes no slot, so it must not overlap with `acquire`."""
        return await self._execute(index, requests)

    async def _execute(self, index: int, requests: list[InferRequest]) -> ExecuteResult:
        instance = self._instances[index]
        submitted = instance.submit(requests)
        if submitted is not None:  # the model runs elsewhere: no hop through the instance's thread
            return await asyncio.wrap_future(submitted)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executors[index], instance.execute, requests)

    async def close(self) -> None:
        """Unload all instances once the executions already started have finished.

        Requests still waiting for an instance or its resources are refused (UnavailableError) rather than run
        after the unload.
        """
        self.refuse_waiting()
        await self._unload_instances()
        self._shutdown_executors()
        self._unregister()

    def refuse_waiting(self) -> None:
        """Stop starting executions: what waits for an instance or for resources fails with UnavailableError."""
        self._is_closing = True
        if self.rate_limiter is not None:
            self.rate_limiter.refuse_waiting(self._limited, "is unloading")

    def _unregister(self) -> None:
        # `_limited` stays: an execution still finishing releases through it.
        if self.rate_limiter is not None:
            self.rate_limiter.unregister(self._limited)

    async def _unload_instances(self) -> None:
        loop = asyncio.get_running_loop()
        pending = [loop.run_in_executor(self._executors[i], inst.unload) for i, inst in enumerate(self._instances)]
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                logger.warning("unloading an instance failed: %s", outcome)
        self._instances = []

    def _shutdown_executors(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False)
