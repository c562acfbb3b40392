"""The Prometheus registry backends publish their own metrics into (e.g. the LLM backend's latencies).

It lives on the bottom floor so that a backend can register metrics without importing the gateway; the
gateway's `/metrics` renders it after Triton's `nv_inference_*` families.
"""

from prometheus_client import CollectorRegistry

BACKEND_METRICS = CollectorRegistry()
