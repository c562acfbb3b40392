"""Which API category each endpoint belongs to: the one table both frontends restrict by.

The categories are Triton's, as `--http-restricted-api` and `--grpc-restricted-protocol` name them. Every HTTP
route (by its canonical path, the pattern it was registered with) and every gRPC method (by its wire path,
`/package.Service/Method`) has exactly one category; tests/server/frontends/test_api_categories.py checks
that the routes and methods the frontends register and this table are the same set.
"""

from __future__ import annotations

from dataclasses import dataclass

CATEGORIES = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)

MODEL_PATH = "/v2/models/{name}"
VERSIONED_MODEL_PATH = "/v2/models/{name}/versions/{version}"
INFERENCE_SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass(frozen=True)
class Endpoints:
    """The endpoints of one category: HTTP canonical paths (any method) and gRPC method wire paths."""

    http_paths: tuple[str, ...] = ()
    grpc_methods: tuple[str, ...] = ()


def _per_model(suffix: str) -> tuple[str, ...]:
    return (MODEL_PATH + suffix, VERSIONED_MODEL_PATH + suffix)


def _rpcs(service: str, *methods: str) -> tuple[str, ...]:
    return tuple(f"/{service}/{method}" for method in methods)


ENDPOINTS: dict[str, Endpoints] = {
    "health": Endpoints(
        ("/v2/health/live", "/v2/health/ready", *_per_model("/ready")),
        # grpc.health.v1 counts as health: a probe of it says as much as ServerReady does.
        _rpcs(INFERENCE_SERVICE, "ServerLive", "ServerReady", "ModelReady") + _rpcs(HEALTH_SERVICE, "Check", "Watch"),
    ),
    "metadata": Endpoints(
        ("/v2", *_per_model("")),
        _rpcs(INFERENCE_SERVICE, "ServerMetadata", "ModelMetadata"),
    ),
    "inference": Endpoints(
        # The OpenAI routes are inference, /v1/models included: it lists what can be inferred with.
        (
            *_per_model("/infer"),
            *_per_model("/generate"),
            *_per_model("/generate_stream"),
            "/v1/models",
            "/v1/completions",
            "/v1/chat/completions",
        ),
        _rpcs(INFERENCE_SERVICE, "ModelInfer", "ModelStreamInfer"),
    ),
    "shared-memory": Endpoints(
        tuple(
            f"/v2/{kind}{path}"
            for kind in ("systemsharedmemory", "cudasharedmemory")
            for path in ("/status", "/region/{region}/status", "/unregister", "/region/{region}/unregister")
        )
        + ("/v2/systemsharedmemory/region/{region}/register", "/v2/cudasharedmemory/region/{region}/register"),
        _rpcs(
            INFERENCE_SERVICE,
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
            "CudaSharedMemoryStatus",
            "CudaSharedMemoryRegister",
            "CudaSharedMemoryUnregister",
        ),
    ),
    "model-config": Endpoints(_per_model("/config"), _rpcs(INFERENCE_SERVICE, "ModelConfig")),
    "model-repository": Endpoints(
        ("/v2/repository/index", "/v2/repository/models/{name}/load", "/v2/repository/models/{name}/unload"),
        _rpcs(INFERENCE_SERVICE, "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    ),
    "statistics": Endpoints(("/v2/models/stats", *_per_model("/stats")), _rpcs(INFERENCE_SERVICE, "ModelStatistics")),
    "trace": Endpoints((), _rpcs(INFERENCE_SERVICE, "TraceSetting")),  # no HTTP trace routes yet
    "logging": Endpoints(("/v2/logging",), _rpcs(INFERENCE_SERVICE, "LogSettings")),
}


def _inverted(field: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for category, endpoints in ENDPOINTS.items():
        for endpoint in getattr(endpoints, field):
            assert endpoint not in table, f"{endpoint} is in two categories"
            table[endpoint] = category
    return table


HTTP_PATH_CATEGORIES: dict[str, str] = _inverted("http_paths")
GRPC_METHOD_CATEGORIES: dict[str, str] = _inverted("grpc_methods")
