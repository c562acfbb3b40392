"""The sequence batcher: Triton's scheduler for stateful models.

Every sequence holds a slot of one instance from its START until its END or until it is idle longer than
`max_sequence_idle_microseconds` (then released; a later request of it is refused). Each instance has a worker
task that runs one batch at a time, so a sequence's requests run in the order they came. Before a batch runs,
the batcher adds each request's control inputs and implicit state; after it, keeps the state outputs and answers
the requests. Statistics follow Triton's: one execution per batch, one inference per request (padding rows of
a direct batch are executed rows, not inferences).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from modelgate.core.errors import InternalError, ModelExecutionError, ModelgateError, UnavailableError
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.scheduling.instance_pool import InstancePool
from modelgate.server.scheduling.sequence.admission import join_sequence, read_flags
from modelgate.server.scheduling.sequence.batch_forming import choose_batch
from modelgate.server.scheduling.sequence.controls import control_tensors
from modelgate.server.scheduling.sequence.implicit_state import (
    ask_for_state_outputs,
    initial_states,
    take_state_outputs,
)
from modelgate.server.scheduling.sequence.padding import padding_request
from modelgate.server.scheduling.sequence.sequence_config import SequenceConfig
from modelgate.server.scheduling.sequence.sequence_table import Sequence, SequenceEntry, SequenceTable
from modelgate.server.statistics import VersionStatistics

logger = logging.getLogger(__name__)


class SequenceBatcher:
    """The scheduler contract (`infer`, `infer_stream`, `close`) for a model with `sequence_batching`."""

    def __init__(self, pool: InstancePool, stats: VersionStatistics, config: SequenceConfig, model_config):
        self.pool = pool
        self.stats = stats
        self.config = config
        self.declared_outputs = [t.name for t in model_config.output]
        self.ragged_inputs = {t.name for t in model_config.input if t.allow_ragged_batch}
        self.table = SequenceTable(len(pool.instances), config.slots_per_instance)
        self._wakeups = [asyncio.Event() for _ in pool.instances]
        self._workers: list[asyncio.Task] = []
        self._reaper: asyncio.Task | None = None
        self._reaper_wakeup = asyncio.Event()
        self._is_closing = False

    async def infer(self, request: InferRequest, batch_size: int) -> InferResponse:
        """The model's response; raises InvalidArgumentError for a request the sequence rules refuse."""
        future = asyncio.get_running_loop().create_future()
        self._enqueue(request, batch_size, future)
        return await future

    def infer_stream(self, request: InferRequest, batch_size: int) -> ResponseStream:
        """Queue `request`; its one response arrives on the stream."""
        stream = ResponseStream(asyncio.get_running_loop())
        request.response_stream = stream
        self._enqueue(request, batch_size, None)
        return stream

    async def close(self) -> None:
        """Let running batches finish, refuse what is queued, then unload the instances."""
        self._is_closing = True
        self.pool.refuse_waiting()  # a worker waiting for rate-limiter resources stops waiting
        for wakeup in self._wakeups:
            wakeup.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._reaper is not None:
            self._reaper.cancel()
        for sequence in list(self.table.sequences.values()):
            for entry in sequence.queue:
                self._fail(entry, UnavailableError(f"model '{self.config.model_name}' is unloading"))
            sequence.queue.clear()
        await self.pool.close()

    # -- queueing --------------------------------------------------------------------------

    def _enqueue(self, request: InferRequest, batch_size: int, future) -> None:
        if self._is_closing:
            raise UnavailableError(f"model '{self.config.model_name}' is unloading; retry the request")
        flags = read_flags(request, batch_size, self.config)
        sequence = join_sequence(self.table, flags, self.config)
        sequence.queue.append(SequenceEntry(request, flags, future))
        self.stats.pending_requests += 1
        self._start_tasks()
        self._wake(sequence)

    def _start_tasks(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._serve(i)) for i in range(len(self._wakeups))]
            self._reaper = asyncio.create_task(self._release_idle_forever())

    def _wake(self, sequence: Sequence | None) -> None:
        if sequence is not None and sequence.slot is not None:
            self._wakeups[sequence.slot[0]].set()

    # -- one worker per instance -----------------------------------------------------------

    async def _serve(self, instance: int) -> None:
        wakeup = self._wakeups[instance]
        while not self._is_closing:
            choice = choose_batch(self.table.on_instance(instance), self.config, self._signature)
            if choice.batch and not choice.wait_ns:
                await self._run_batch_when_allowed(instance)
                continue
            wakeup.clear()
            timeout = choice.wait_ns / 1e9 if choice.batch else None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout)

    async def _run_batch_when_allowed(self, instance: int) -> None:
        """Wait for the instance's rate-limiter resources (at once without), then form the batch again, as Triton
        forms a batch when the instance may run: requests that came meanwhile join it."""
        await self.pool.wait_for_resources(instance)
        try:
            choice = choose_batch(self.table.on_instance(instance), self.config, self._signature)
            if choice.batch and not choice.wait_ns:
                await self._run_batch(instance, choice.batch)
        finally:
            self.pool.release_resources(instance)

    async def _run_batch(self, instance: int, batch: list[Sequence | None]) -> None:
        taken = [(s, s.queue.popleft()) for s in batch if s is not None]
        for sequence, _ in taken:
            sequence.is_executing = True
        self.stats.pending_requests -= len(taken)
        try:
            await self._execute(instance, batch, taken)
        except Exception as exc:  # a bug must not stop the instance's worker: its sequences would hang
            logger.exception("sequence batch of model '%s' failed", self.config.model_name)
            for sequence, entry in taken:
                self._finish(sequence, entry, self._error_response(entry, InternalError(str(exc))), 0, None)
        self._reaper_wakeup.set()

    async def _execute(self, instance: int, batch: list[Sequence | None], taken) -> None:
        hidden = [self._prepare(sequence, entry) for sequence, entry in taken]
        requests = self._positioned_requests(batch, [entry.request for _, entry in taken])
        started = time.monotonic_ns()
        try:
            result = await self.pool.execute_on(instance, requests, release=False)
        except ModelgateError as exc:
            for sequence, entry in taken:
                self._finish(sequence, entry, self._error_response(entry, exc), started, None)
            return
        timings = result.timings
        self.stats.record_execution(len(requests), len(taken), timings.input_ns, timings.infer_ns, timings.output_ns)
        responses = self._real_responses(batch, result.responses, len(requests), taken)
        for (sequence, entry), response, hidden_outputs in zip(taken, responses, hidden):
            response = self._keep_state(sequence, response, hidden_outputs)
            self._finish(sequence, entry, response, started, timings)

    def _prepare(self, sequence: Sequence, entry: SequenceEntry) -> set[str]:
        """Add the control inputs and the state to the request; returns the state outputs to drop."""
        request = entry.request
        request.inputs.update(control_tensors(self.config.controls, entry.flags, self.config.has_batch_dim))
        if not self.config.states:
            return set()
        if entry.flags.is_start or sequence.states is None:
            sequence.states = initial_states(self.config.states, self.config.has_batch_dim)
        request.inputs.update(sequence.states)
        return ask_for_state_outputs(request, self.config.states, self.declared_outputs)

    def _positioned_requests(self, batch: list[Sequence | None], real: list[InferRequest]) -> list[InferRequest]:
        """The batch's requests by position, padding requests in the free slots (direct)."""
        remaining = iter(real)
        return [next(remaining) if s is not None else padding_request(real[0], self.config) for s in batch]

    def _real_responses(self, batch, responses: list[InferResponse], num_requests: int, taken) -> list:
        if len(responses) != num_requests:
            error = ModelExecutionError(f"backend returned {len(responses)} responses for {num_requests} requests")
            return [self._error_response(entry, error) for _, entry in taken]
        return [response for s, response in zip(batch, responses) if s is not None]

    def _keep_state(self, sequence: Sequence, response: InferResponse, hidden: set[str]) -> InferResponse:
        if response.error is not None or not self.config.states:
            return response
        try:
            sequence.states = take_state_outputs(response, self.config.states, hidden)
        except ModelExecutionError as exc:
            response.outputs, response.error = [], exc
        return response

    # -- answering and ending --------------------------------------------------------------

    def _finish(self, sequence: Sequence, entry: SequenceEntry, response: InferResponse, started: int, timings):
        sequence.is_executing = False
        sequence.idle_since_ns = now = time.monotonic_ns()
        self._answer(entry, response)
        if response.error is None:
            compute = (timings.input_ns, timings.infer_ns, timings.output_ns)
            self.stats.record_success(now - entry.arrival_ns, started - entry.arrival_ns, 1, compute)
        else:
            self.stats.record_failure(now - entry.arrival_ns, "BACKEND")
        if entry.flags.is_end and not sequence.queue:
            self._wake(self.table.release(sequence))

    def _answer(self, entry: SequenceEntry, response: InferResponse) -> None:
        if entry.future is None:
            entry.request.response_stream.send(response, is_final=True)
        elif not entry.future.done():  # done: the client went away
            entry.future.set_result(response)

    def _fail(self, entry: SequenceEntry, error: ModelgateError) -> None:
        self.stats.pending_requests -= 1
        if entry.future is None:
            entry.request.response_stream.fail(self._error_response(entry, error))
        elif not entry.future.done():
            entry.future.set_exception(error)

    def _error_response(self, entry: SequenceEntry, error: ModelgateError) -> InferResponse:
        request = entry.request
        return InferResponse(request.model_name, request.model_version, id=request.id, error=error)

    def _signature(self, request: InferRequest) -> tuple:
        """Non-batch shapes of the client's inputs: requests batch together only where they match."""
        start = 1 if self.config.has_batch_dim else 0
        return tuple(
            sorted(
                (name, t.shape[start:] if name not in self.ragged_inputs else None)
                for name, t in request.inputs.items()
            )
        )

    # -- idle sequences --------------------------------------------------------------------

    async def _release_idle_forever(self) -> None:
        while True:
            wait_ns = self._release_idle()
            self._reaper_wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reaper_wakeup.wait(), None if wait_ns is None else wait_ns / 1e9)

    def _release_idle(self) -> int | None:
        """Release the sequences idle too long; returns how long until the next one would be (None: none idle)."""
        now = time.monotonic_ns()
        next_ns = None
        for sequence in self.table.idle_sequences():
            left = sequence.idle_since_ns + self.config.idle_ns - now
            if left <= 0:
                self._wake(self.table.release(sequence, was_idle=True))
            else:
                next_ns = left if next_ns is None else min(next_ns, left)
        return next_ns
