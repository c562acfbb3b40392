"""The ensemble scheduler: a request runs as a DAG of steps on the composing models.

Invariants:
- a step starts as soon as every ensemble tensor it reads exists; steps whose inputs are
  ready run concurrently, each as its own asyncio task;
- tensors are handed on by reference: a step's input is the very numpy array that the
  request or an earlier step produced (no copies), so composing models must not modify
  their inputs in place (as in Triton, where ensemble tensors are shared buffers);
- each step goes through `infer_step` (the dataplane's `infer`), so a composing model keeps
  its own scheduler, batching and statistics, and `model_version: -1` follows its latest
  serving version at request time;
- the first failing step fails the request, with an error naming the ensemble, the step
  and its model; the steps still running are cancelled. A composing model that is not
  serving (e.g. unloaded) fails the request as UNAVAILABLE;
- the response holds only the requested outputs (all ensemble outputs when none are named);
- the ensemble's own statistics count its requests: success, fail and queue (zero: an
  ensemble request never waits for an instance of its own; its steps' queueing shows in
  the composing models' statistics). The ensemble executes nothing itself, so it records
  no executions or compute times, as Triton's ensembles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from modelgate.core.errors import ModelExecutionError, ModelgateError, NotFoundError, UnavailableError
from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor, RequestedOutput
from modelgate.core.response_stream import ResponseStream
from modelgate.server.scheduling.ensemble.graph import EnsembleGraph, EnsembleStep
from modelgate.server.statistics import VersionStatistics

StepInfer = Callable[[InferRequest], Awaitable[InferResponse]]


class StepFailure(Exception):
    """A step failed: `error` (naming the step) is the request's error; `reason` Triton's failure label."""

    def __init__(self, error: ModelgateError, reason: str):
        super().__init__(error.message)
        self.error = error
        self.reason = reason


class EnsembleScheduler:
    def __init__(self, graph: EnsembleGraph, stats: VersionStatistics, infer_step: StepInfer):
        self.graph = graph
        self.stats = stats
        self.infer_step = infer_step
        self._streaming_tasks: set[asyncio.Task] = set()

    async def infer(self, request: InferRequest, batch_size: int) -> InferResponse:
        """The ensemble's response; a failing step becomes the response's `error`."""
        started = time.perf_counter_ns()
        response = InferResponse(request.model_name, request.model_version, id=request.id)
        try:
            tensors = await self._run_steps(request)
        except StepFailure as failure:
            self.stats.record_failure(time.perf_counter_ns() - started, failure.reason)
            response.error = failure.error
            return response
        wanted = request.requested_output_names or list(self.graph.output_names)
        response.outputs = [tensors[name] for name in wanted]
        self.stats.record_success(time.perf_counter_ns() - started, 0, batch_size, (0, 0, 0))
        return response

    def infer_stream(self, request: InferRequest, batch_size: int) -> ResponseStream:
        """One response (or error) on a stream, as for any non-decoupled model."""
        stream = ResponseStream(asyncio.get_running_loop())
        request.response_stream = stream
        task = asyncio.create_task(self._respond_on(stream, request, batch_size))
        self._streaming_tasks.add(task)
        task.add_done_callback(self._streaming_tasks.discard)
        return stream

    async def close(self) -> None:
        """Nothing to release: requests in flight finish on the composing models."""

    # -- internals -------------------------------------------------------------------------

    async def _respond_on(self, stream: ResponseStream, request: InferRequest, batch_size: int) -> None:
        stream.send(await self.infer(request, batch_size), is_final=True)

    async def _run_steps(self, request: InferRequest) -> dict[str, InferTensor]:
        """Every ensemble tensor of `request` by name, once all steps ran; raises StepFailure."""
        tensors: dict[str, InferTensor] = dict(request.inputs)
        # Only step outputs are awaited: an optional ensemble input that is absent stays absent.
        waiting = {s.index: {t for t in s.input_map.values() if t in self.graph.producers} for s in self.graph.steps}
        running: dict[asyncio.Task, EnsembleStep] = {}

        def start(step: EnsembleStep) -> None:
            running[asyncio.create_task(self._run_step(step, request, tensors))] = step

        for step in self.graph.steps:
            if not waiting[step.index]:
                start(step)
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for produced in _results_or_first_failure(done):
                    tensors.update(produced)
                    for ready in self._newly_ready(produced, waiting):
                        start(ready)
                for task in done:
                    del running[task]
        finally:
            await _cancel_all(running)
        return tensors

    def _newly_ready(self, produced: dict[str, InferTensor], waiting: dict[int, set[str]]) -> list[EnsembleStep]:
        ready = []
        for tensor in produced:
            for index in self.graph.consumers.get(tensor, ()):
                if tensor in waiting[index]:
                    waiting[index].discard(tensor)
                    if not waiting[index]:
                        ready.append(self.graph.step(index))
        return ready

    async def _run_step(self, step: EnsembleStep, request: InferRequest, tensors: dict[str, InferTensor]):
        """The ensemble tensors `step` writes; raises StepFailure naming the step."""
        step_request = InferRequest(
            model_name=step.model_name,
            model_version=step.model_version,
            id=request.id,
            parameters=dict(request.parameters),
            inputs={name: _renamed(tensors[t], name) for name, t in step.input_map.items() if t in tensors},
            outputs=[RequestedOutput(name) for name in step.output_map],
        )
        try:
            response = await self.infer_step(step_request)
        except ModelgateError as exc:
            raise StepFailure(self._step_error(step, exc), "OTHER") from None
        if response.error is not None:
            raise StepFailure(self._step_error(step, response.error), "BACKEND")
        returned = {tensor.name: tensor for tensor in response.outputs}
        missing = [name for name in step.output_map if name not in returned]
        if missing:
            error = ModelExecutionError(f"it returned no output {', '.join(repr(m) for m in missing)}")
            raise StepFailure(self._step_error(step, error), "BACKEND")
        return {tensor: _renamed(returned[name], tensor) for name, tensor in step.output_map.items()}

    def _step_error(self, step: EnsembleStep, error: ModelgateError) -> ModelgateError:
        """`error` of the same kind, its message prefixed with the ensemble and the step.

        A step's model that is missing or not serving makes the ensemble UNAVAILABLE (the
        ensemble itself exists, so never NOT_FOUND).
        """
        message = f"ensemble '{self.graph.name}' {step.label} failed: {error.message}"
        if isinstance(error, (NotFoundError, UnavailableError)):
            return UnavailableError(message)
        try:
            return type(error)(message)
        except TypeError:  # an error class with a different constructor (e.g. ConfigError)
            return ModelExecutionError(message)


def _results_or_first_failure(done: set[asyncio.Task]) -> list[dict[str, InferTensor]]:
    """The results of finished step tasks; raises the first StepFailure (reading every exception)."""
    failures = [task.exception() for task in done if task.exception() is not None]
    if failures:
        raise failures[0]
    return [task.result() for task in done]


async def _cancel_all(tasks) -> None:
    """Cancel the steps still running after a failure and wait until they stopped."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # read, so that asyncio never logs it as unretrieved


def _renamed(tensor: InferTensor, name: str) -> InferTensor:
    """The same array under another name: a new wrapper, never a copy of the data."""
    return InferTensor(name, tensor.datatype, tensor.shape, tensor.data)
