"""Runs the warm-up samples on every instance of a version that is loading, before it serves.

As Triton: each instance runs each sample in order, `count` times, its requests as one execution; the first
error ends the warm-up and fails the load with the sample's name. The executions count in the version's
statistics as Triton's do (the backend reports them like any other): execution count, inference count, the
success and compute durations and the batch statistics. Their queue time is zero: they never wait in a queue.
"""

from __future__ import annotations

import asyncio
import time

from modelgate.backends.base import InstanceLoadError
from modelgate.core.errors import ModelgateError
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.request_validation import RequestSchema
from modelgate.server.scheduling.instance_pool import InstancePool
from modelgate.server.statistics import VersionStatistics
from modelgate.server.warmup.samples import WarmupSample


async def warm_up(
    pool: InstancePool, samples: list[WarmupSample], schema: RequestSchema, stats: VersionStatistics, is_decoupled: bool
) -> None:
    """Run every sample on every instance of `pool` (not serving yet); InstanceLoadError naming the sample."""
    for sample in samples:
        _prepare(sample, schema)
    for index, spec in enumerate(pool.specs):
        for sample in samples:
            for _ in range(sample.num_runs):
                error = await _run_once(pool, index, sample, stats, is_decoupled)
                if error is not None:
                    raise InstanceLoadError(
                        f"warm-up sample '{sample.name}' failed on instance '{spec.instance_name}': {error}"
                    )


def _prepare(sample: WarmupSample, schema: RequestSchema) -> None:
    """Check the requests as the dataplane checks a client's (this applies an input's `reshape`)."""
    try:
        for request in sample.requests:
            schema.validate(request)
    except ModelgateError as exc:
        raise InstanceLoadError(f"warm-up sample '{sample.name}' is not a valid request: {exc.message}") from None


async def _run_once(pool, index: int, sample: WarmupSample, stats: VersionStatistics, is_decoupled: bool):
    """One execution of the sample's requests on instance `index`; the first error, or None."""
    started = time.monotonic_ns()
    streams = [_attach_stream(request) for request in sample.requests] if is_decoupled else []
    try:
        result = await pool.execute_before_serving(index, sample.requests)
    except ModelgateError as exc:
        return exc.message
    timings = result.timings
    stats.record_execution(sample.batch_size, sample.batch_size, timings.input_ns, timings.infer_ns, timings.output_ns)
    errors = [r.error.message for r in result.responses if r.error is not None]
    if not is_decoupled and len(result.responses) != sample.batch_size:
        errors.append(f"the model returned {len(result.responses)} responses for {sample.batch_size} requests")
    if not errors:
        for stream in streams:
            errors.extend(await _stream_errors(stream))
    if errors:
        return errors[0]
    compute = (timings.input_ns, timings.infer_ns, timings.output_ns)
    for _ in sample.requests:
        stats.record_success(time.monotonic_ns() - started, 0, 1, compute)
    return None


def _attach_stream(request: InferRequest) -> ResponseStream:
    stream = ResponseStream(asyncio.get_running_loop())
    request.response_stream = stream
    return stream


async def _stream_errors(stream: ResponseStream) -> list[str]:
    """A decoupled request's errors, once its final flag came."""
    errors = []
    async for item in stream:
        response: InferResponse | None = item.response
        if response is not None and response.error is not None:
            errors.append(response.error.message)
    return errors
