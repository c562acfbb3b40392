"""The direct scheduler: each request executes alone on a free instance (no batching)."""

from __future__ import annotations

import asyncio
import time

from modelgate.core.errors import ModelExecutionError
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.scheduling.instance_pool import InstancePool
from modelgate.server.statistics import VersionStatistics


class DirectScheduler:
    """Runs one request per execution and records Triton's statistics for it."""

    def __init__(self, pool: InstancePool, stats: VersionStatistics, is_decoupled: bool = False):
        self.pool = pool
        self.stats = stats
        self.is_decoupled = is_decoupled
        self._streaming_tasks: set[asyncio.Task] = set()

    async def infer(self, request: InferRequest, batch_size: int) -> InferResponse:
        """The model's response; errors of the model become the response's `error`."""
        started = time.perf_counter_ns()
        responses, queue_ns, timings = await self._execute(request, batch_size)
        response = _single_response(responses, request)
        self._record_outcome(response.error is None, started, queue_ns, batch_size, timings)
        return response

    def infer_stream(self, request: InferRequest, batch_size: int) -> ResponseStream:
        """Start `request`; its responses (one, or 0..n for a decoupled model) arrive on the stream."""
        stream = ResponseStream(asyncio.get_running_loop())
        request.response_stream = stream
        task = asyncio.create_task(self._run_streamed(request, batch_size, stream))
        self._streaming_tasks.add(task)
        task.add_done_callback(self._streaming_tasks.discard)
        return stream

    async def close(self) -> None:
        await self.pool.close()

    async def _run_streamed(self, request: InferRequest, batch_size: int, stream: ResponseStream) -> None:
        if not self.is_decoupled:
            stream.send(await self.infer(request, batch_size), is_final=True)
            return
        started = time.perf_counter_ns()
        responses, queue_ns, timings = await self._execute(request, batch_size)
        failed = [r for r in responses if r.error is not None]
        for response in failed:
            stream.fail(response)  # the request failed before streaming: end the stream with the error
        self._record_outcome(not failed, started, queue_ns, batch_size, timings)

    async def _execute(self, request: InferRequest, batch_size: int):
        # Pending means waiting for an instance, as Triton's nv_inference_pending_request_count.
        self.stats.pending_requests += 1
        result, queue_ns = await self.pool.run([request], on_dispatch=self._dispatched)
        timings = result.timings
        self.stats.record_execution(batch_size, 1, timings.input_ns, timings.infer_ns, timings.output_ns)
        return result.responses, queue_ns, timings

    def _dispatched(self) -> None:
        self.stats.pending_requests -= 1

    def _record_outcome(self, succeeded: bool, started: int, queue_ns: int, batch_size: int, timings) -> None:
        elapsed = time.perf_counter_ns() - started
        if succeeded:
            compute = (timings.input_ns, timings.infer_ns, timings.output_ns)
            self.stats.record_success(elapsed, queue_ns, batch_size, compute)
        else:
            self.stats.record_failure(elapsed, "BACKEND")


def _single_response(responses: list[InferResponse], request: InferRequest) -> InferResponse:
    if len(responses) == 1:
        return responses[0]
    error = ModelExecutionError(f"backend returned {len(responses)} responses for 1 request")
    return InferResponse(request.model_name, request.model_version, id=request.id, error=error)
