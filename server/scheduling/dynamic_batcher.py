"""Triton's dynamic batcher: queued requests of one model version coalesced into batches.

While an instance is free and requests wait, a batch is formed in queue order (priority,
then arrival): requests join while the batch stays within `max_batch_size` and their
non-batch dimensions match the first request's (unless the input allows ragged batches).
A batch goes out at once when it reaches the largest preferred size it can (or the
maximum); otherwise it waits for more requests until the oldest one has waited
`max_queue_delay_microseconds`. The backend gets the batch's requests as a list, as in
Triton; framework backends concatenate them along the batch dimension.
"""

from __future__ import annotations

import asyncio
import time

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ModelExecutionError, ModelgateError, UnavailableError
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.scheduling.instance_pool import InstancePool
from modelgate.server.scheduling.priority_queue import PriorityQueue, QueuedRequest
from modelgate.server.statistics import VersionStatistics


class DynamicBatcher:
    def __init__(self, pool: InstancePool, stats: VersionStatistics, config: ModelConfig):
        self.pool = pool
        self.stats = stats
        self.is_decoupled = config.model_transaction_policy.decoupled
        self.max_batch_size = max(1, config.max_batch_size)
        batching = config.dynamic_batching
        self.preferred_sizes = sorted(s for s in batching.preferred_batch_size if s <= self.max_batch_size)
        self.max_delay_ns = batching.max_queue_delay_microseconds * 1000
        self.ragged_inputs = {t.name for t in config.input if t.allow_ragged_batch}
        self.queue = PriorityQueue(batching, config.name)
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    async def infer(self, request: InferRequest, batch_size: int) -> InferResponse:
        future = asyncio.get_running_loop().create_future()
        self._enqueue(QueuedRequest(request, batch_size, future))
        return await future

    def infer_stream(self, request: InferRequest, batch_size: int) -> ResponseStream:
        stream = ResponseStream(asyncio.get_running_loop())
        request.response_stream = stream
        self._enqueue(QueuedRequest(request, batch_size, None))
        return stream

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        for entry in list(self.queue.ordered()):
            self._fail(entry, UnavailableError(f"model '{entry.request.model_name}' is unloading"))
        await self.pool.close()

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, entry: QueuedRequest) -> None:
        self.queue.add(entry)  # raises for a full queue or a bad priority
        self.stats.pending_requests += 1
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._batch_forever())
        self._wakeup.set()

    async def _batch_forever(self) -> None:
        while True:
            if not len(self.queue):
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                index = await self.pool.acquire()
            except UnavailableError as exc:
                self._fail_all(exc)
                return
            batch = await self._form_batch()
            if not batch:
                self.pool.release(index)
                continue
            task = asyncio.create_task(self._execute(index, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form_batch(self) -> list[QueuedRequest]:
        """The next batch, waiting (up to the oldest request's delay) for a preferred size."""
        while True:
            self._reject_expired()
            batch = self._candidate()
            if not batch:
                return []
            size = sum(e.batch_size for e in batch)
            oldest = min(e.arrival_ns for e in batch)
            waited = time.monotonic_ns() - oldest
            if self._is_preferred(size, batch) or waited >= self.max_delay_ns:
                return self._take(batch, size)
            self._wakeup.clear()
            wait_ns = self.max_delay_ns - waited
            deadline = self.queue.next_deadline_ns()
            if deadline is not None:
                wait_ns = min(wait_ns, max(0, deadline - time.monotonic_ns()))
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait_ns / 1e9)
            except asyncio.TimeoutError:
                pass

    def _candidate(self) -> list[QueuedRequest]:
        batch: list[QueuedRequest] = []
        size = 0
        signature = None
        for entry in self.queue.ordered():
            entry_signature = self._signature(entry.request)
            if signature is None:
                signature = entry_signature
            elif entry_signature != signature or size + entry.batch_size > self.max_batch_size:
                break
            batch.append(entry)
            size += entry.batch_size
        return batch

    def _is_preferred(self, size: int, batch: list[QueuedRequest]) -> bool:
        if size >= self.max_batch_size or (self.preferred_sizes and size >= self.preferred_sizes[-1]):
            return True
        return size in self.preferred_sizes and not self._can_grow(batch)

    def _can_grow(self, batch) -> bool:
        """Whether requests beyond `batch` wait that could make it larger (then keep collecting)."""
        return len(self.queue) > len(batch)

    def _take(self, batch: list[QueuedRequest], size: int) -> list[QueuedRequest]:
        if self.preferred_sizes and size not in self.preferred_sizes and size < self.max_batch_size:
            batch = self._trim_to_preferred(batch)
        self.queue.remove(batch)
        self.stats.pending_requests -= len(batch)
        return batch

    def _trim_to_preferred(self, batch: list[QueuedRequest]) -> list[QueuedRequest]:
        """The longest prefix whose size is a preferred size, if any; else the whole batch."""
        total, best = 0, 0
        for count, entry in enumerate(batch, start=1):
            total += entry.batch_size
            if total in self.preferred_sizes:
                best = count
        return batch[:best] if best else batch

    def _signature(self, request: InferRequest) -> tuple:
        return tuple(
            sorted(
                (name, t.shape[1:] if name not in self.ragged_inputs else None) for name, t in request.inputs.items()
            )
        )

    def _reject_expired(self) -> None:
        for entry in self.queue.expire(time.monotonic_ns()):
            self.stats.pending_requests -= 1
            self.stats.record_failure(time.monotonic_ns() - entry.arrival_ns, "REJECTED")
            self._fail(entry, UnavailableError("request timeout expired while the request was queued"))

    async def _execute(self, index: int, batch: list[QueuedRequest]) -> None:
        started = time.monotonic_ns()
        requests = [e.request for e in batch]
        try:
            result = await self.pool.execute_on(index, requests)
        except ModelgateError as exc:
            for entry in batch:
                self._fail(entry, exc)
            return
        timings = result.timings
        size = sum(e.batch_size for e in batch)
        self.stats.record_execution(size, len(batch), timings.input_ns, timings.infer_ns, timings.output_ns)
        responses = result.responses
        if not self.is_decoupled and len(responses) != len(batch):
            responses = [
                InferResponse(
                    e.request.model_name,
                    "",
                    id=e.request.id,
                    error=ModelExecutionError(
                        f"backend returned {len(result.responses)} responses for {len(batch)} requests"
                    ),
                )
                for e in batch
            ]
        self._deliver(batch, responses, started, timings)

    def _deliver(self, batch: list[QueuedRequest], responses: list[InferResponse], started: int, timings) -> None:
        """Hand each request its response (decoupled: fail the stream of a request that failed)."""
        now = time.monotonic_ns()
        compute = (timings.input_ns, timings.infer_ns, timings.output_ns)
        for position, entry in enumerate(batch):
            response = responses[position] if position < len(responses) else None
            if self.is_decoupled:
                succeeded = response is None or response.error is None
                if not succeeded:
                    entry.request.response_stream.fail(response)
            else:
                succeeded = response.error is None
                self._resolve(entry, response)
            if succeeded:
                self.stats.record_success(now - entry.arrival_ns, started - entry.arrival_ns, entry.batch_size, compute)
            else:
                self.stats.record_failure(now - entry.arrival_ns, "BACKEND")

    def _resolve(self, entry: QueuedRequest, response: InferResponse) -> None:
        if entry.future is not None:
            if not entry.future.done():
                entry.future.set_result(response)
        else:
            entry.request.response_stream.send(response, is_final=True)

    def _fail(self, entry: QueuedRequest, error: ModelgateError) -> None:
        if entry.future is not None:
            if not entry.future.done():
                entry.future.set_exception(error)
        else:
            response = InferResponse(entry.request.model_name, "", id=entry.request.id, error=error)
            entry.request.response_stream.fail(response)

    def _fail_all(self, error: ModelgateError) -> None:
        entries = list(self.queue.ordered())
        self.queue.remove(entries)
        for entry in entries:
            self.stats.pending_requests -= 1
            self._fail(entry, error)
