"""The instances of one model version, each bound to its own thread.

An instance is created, executes and is unloaded on its own single-thread executor, so a
model never sees two threads and the event loop never runs model code. `run` waits for a
free instance; `close` lets in-flight executions finish, then unloads every instance.

A pool made with `pipelined=True` (a scheduler that forms no batches) hands an instance up to its
`pipeline_depth` batches at once: each instance has that many slots. A batching scheduler gets one slot per
instance, so its batches grow while the instances are busy.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor

from modelgate.backends.base import Backend, ExecuteResult, InstanceSpec, ModelInstance
from modelgate.core.errors import UnavailableError
from modelgate.core.inference_types import InferRequest

logger = logging.getLogger(__name__)


class InstancePool:
    def __init__(self, specs: list[InstanceSpec], pipelined: bool = False):
        self.specs = specs
        self.pipelined = pipelined
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
        """Create every instance on its thread; on any failure unload those made and raise."""
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
        """Wait (first come, first served) for a free instance (slot) and hold it; `execute_on` releases it."""
        if self._free and not self._waiters:
            index = self._free.pop()
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                index = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(waiter.result())  # handed over just as we were cancelled: pass it on
                raise
        if self._is_closing:
            # Never run a model after its unload was queued: the request fails, the model finalizes cleanly.
            self.release(index)
            raise UnavailableError(f"model '{self.specs[0].model_name}' is unloading; retry the request")
        return index

    def release(self, index: int) -> None:
        """Give an instance back: to the oldest waiting request, else to the free list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(index)
                return
        self._free.append(index)

    async def execute_on(self, index: int, requests: list[InferRequest], release: bool = True) -> ExecuteResult:
        """Run one batch on the held instance `index`, then release it (unless `release` is false: the sequence
        batcher keeps each instance to itself, its sequences bound to it, and never acquires one)."""
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

        Requests still waiting for an instance are refused (UnavailableError) rather than run
        after the unload.
        """
        self._is_closing = True
        await self._unload_instances()
        self._shutdown_executors()

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
