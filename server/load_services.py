"""What the server shares among the loads of all its models."""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.server.rate_limiter.rate_limiter import RateLimiter
from modelgate.server.response_cache.lru_cache import ResponseCache


@dataclass
class LoadServices:
    """Server-wide objects a loading version is handed. None: the server runs without that feature."""

    response_cache: ResponseCache | None = None  # --cache-config: for models that enable response_cache
    rate_limiter: RateLimiter | None = None  # --rate-limit execution_count: every instance's executions
