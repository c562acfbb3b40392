"""A model version's scheduler behind the response cache (`response_cache { enable: true }`).

A request whose key is cached is answered from the cache without running the model; any other runs as before
and, when it succeeds with host tensors, its response is stored. Statistics follow Triton's: a hit counts in
`cache_hit` (the lookup's time), in `success` and in `queue` (zero), never in the inference or execution
counts; a miss counts in `cache_miss` (the lookup's and the insertion's time) besides its execution. Streamed
requests (ModelStreamInfer of a model that is not decoupled) pass through uncached.
"""

from __future__ import annotations

import time

import numpy as np

from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.server.response_cache.cache_key import cache_key
from modelgate.server.response_cache.lru_cache import ResponseCache
from modelgate.server.statistics import VersionStatistics


class CachingScheduler:
    def __init__(self, inner, cache: ResponseCache, stats: VersionStatistics, version: int):
        self.inner = inner
        self.cache = cache
        self.stats = stats
        self.version = version
        stats.uses_response_cache = True

    async def infer(self, request: InferRequest, batch_size: int) -> InferResponse:
        started = time.monotonic_ns()
        key = None if request.can_take_output_values else cache_key(request, self.version)
        if key is None:
            return await self.inner.infer(request, batch_size)
        cached = self.cache.lookup(key)
        looked_up = time.monotonic_ns()
        if cached is not None:
            self.stats.record_cache_hit(looked_up - started)
            return InferResponse(
                request.model_name, str(self.version), request.id, dict(cached.parameters), list(cached.outputs)
            )
        response = await self.inner.infer(request, batch_size)
        inserting = time.monotonic_ns()
        if _can_store(response):
            self.cache.insert(key, response.outputs, response.parameters)
        self.stats.record_cache_miss(looked_up - started + time.monotonic_ns() - inserting)
        return response

    @property
    def pool(self):
        """The instances of the scheduler behind the cache."""
        return self.inner.pool

    def infer_stream(self, request: InferRequest, batch_size: int) -> ResponseStream:
        return self.inner.infer_stream(request, batch_size)

    async def close(self) -> None:
        await self.inner.close()


def _can_store(response: InferResponse) -> bool:
    return (
        response.error is None
        and response.values is None
        and all(isinstance(tensor.data, np.ndarray) for tensor in response.outputs)
    )
