"""The server's own health on /metrics, beside Triton's per-model families: how late the event loop runs what
is due (a request that blocks it delays every other), and how large the requests are.

- `modelgate_event_loop_lag_seconds` (histogram): how late a probe that the loop should run every
  LOOP_PROBE_INTERVAL_S ran, one observation per probe (`loop_lag.py`);
- `modelgate_event_loop_lag_max_seconds` (gauge): the largest of those since the server started serving;
- `modelgate_request_bytes` (histogram, label `protocol`: http, grpc): the size of each request body (HTTP, any
  route) or inference message (gRPC ModelInfer / ModelStreamInfer).

One registry per server: several servers in one process (tests) keep their own figures.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram

LOOP_PROBE_INTERVAL_S = 0.05
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BYTE_BUCKETS = tuple(float(1 << shift) for shift in range(6, 32, 2))  # 64 B .. 1 GiB, by 4x


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.loop_lag = Histogram(
            "modelgate_event_loop_lag_seconds",
            f"How late the event loop ran a probe due every {LOOP_PROBE_INTERVAL_S:g} s (a stall delays every request)",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "modelgate_event_loop_lag_max_seconds",
            "The largest event-loop lag seen since the server started serving",
            registry=self.registry,
        )
        self.request_bytes = Histogram(
            "modelgate_request_bytes",
            "Size of each request: HTTP body (any route), gRPC inference message",
            ("protocol",),
            buckets=_BYTE_BUCKETS,
            registry=self.registry,
        )
        for protocol in ("http", "grpc"):  # shown from the start, at zero
            self.request_bytes.labels(protocol)
        self._grpc_request_bytes = self.request_bytes.labels("grpc")  # labels() per request takes a lock
        self._largest_lag = 0.0

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        if seconds > self._largest_lag:
            self._largest_lag = seconds
            self.loop_lag_max.set(seconds)

    def observe_grpc_request(self, size: int) -> None:
        self._grpc_request_bytes.observe(size)

    @property
    def http_middleware(self):
        """An aiohttp middleware observing every request's body size (Content-Length, or what was read)."""
        histogram = self.request_bytes.labels("http")

        @web.middleware
        async def observe_request_bytes(request: web.Request, handler):
            if request.content_length is not None:  # declared: counted even when refused as too large
                histogram.observe(request.content_length)
                return await handler(request)
            response = await handler(request)
            if request.body_exists and 200 <= response.status < 300:  # chunked and read: aiohttp keeps it
                histogram.observe(len(await request.read()))
            return response

        return observe_request_bytes
