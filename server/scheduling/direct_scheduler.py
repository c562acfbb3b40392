"""The direct scheduler: each request executes alone on a free instance (no batching)."""

from __future__ import annotations

import time

from server.errors import ModelExecutionError
from server.inference_types import InferRequest, InferResponse
from server.scheduling.instance_pool import InstancePool
from server.statistics import VersionStatistics


class DirectScheduler:
    """Runs one request per execution and records Triton's statistics for it."""

    def __init__(self, pool: InstancePool, stats: VersionStatistics):
        self.pool = pool
        self.stats = stats

    async def infer(self, request: InferRequest, batch_size: int) -> InferResponse:
        """The model's response; errors of the model become the response's `error`."""
        started = time.perf_counter_ns()
        self.stats.pending_requests += 1
        try:
            result, queue_ns = await self.pool.run([request])
        finally:
            self.stats.pending_requests -= 1
        timings = result.timings
        self.stats.record_execution(batch_size, timings.input_ns, timings.infer_ns, timings.output_ns)
        response = _single_response(result.responses, request)
        elapsed = time.perf_counter_ns() - started
        if response.error is None:
            self.stats.record_success(
                elapsed, queue_ns, batch_size, (timings.input_ns, timings.infer_ns, timings.output_ns)
            )
        else:
            self.stats.record_failure(elapsed, "BACKEND")
        return response

    async def close(self) -> None:
        await self.pool.close()


def _single_response(responses: list[InferResponse], request: InferRequest) -> InferResponse:
    if len(responses) == 1:
        return responses[0]
    error = ModelExecutionError(f"backend returned {len(responses)} responses for 1 request")
    return InferResponse(request.model_name, request.model_version, id=request.id, error=error)
