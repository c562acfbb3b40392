"""The one table of API categories covers exactly what the frontends serve, and costs nothing unrestricted."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2

from modelgate.server.frontends.api_categories import (
    CATEGORIES,
    ENDPOINTS,
    GRPC_METHOD_CATEGORIES,
    HEALTH_SERVICE,
    HTTP_PATH_CATEGORIES,
    INFERENCE_SERVICE,
)
from modelgate.server.frontends.api_restrictions import parse_restrictions
from modelgate.server.frontends.grpc.registration import register_service
from modelgate.server.frontends.http.app import create_http_app
from modelgate.server.log_settings import LogSettings


def _http_paths(restricted: list[str] | None = None):
    restrictions = parse_restrictions(restricted or [], "--http-restricted-api")
    # The handlers only keep the dataplane at creation: no dataplane is needed to list the routes.
    app = create_http_app(None, LogSettings(0), restrictions=restrictions)
    return app, {route.resource.canonical for route in app.router.routes()}


def _grpc_methods() -> set[str]:
    methods = set()
    for messages, service in ((service_pb2, "GRPCInferenceService"), (health_pb2, "Health")):
        descriptor = messages.DESCRIPTOR.services_by_name[service]
        methods |= {f"/{descriptor.full_name}/{method.name}" for method in descriptor.methods}
    return methods


def test_every_http_route_has_a_category_and_the_table_names_no_other():
    _, paths = _http_paths()
    assert paths - set(HTTP_PATH_CATEGORIES) == set(), "routes without a category"
    assert set(HTTP_PATH_CATEGORIES) - paths == set(), "table entries that are no route"


def test_every_grpc_method_has_a_category_and_the_table_names_no_other():
    methods = _grpc_methods()
    assert methods - set(GRPC_METHOD_CATEGORIES) == set(), "methods without a category"
    assert set(GRPC_METHOD_CATEGORIES) - methods == set(), "table entries that are no method"


def test_categories_are_tritons_and_the_examples_of_the_brief_sit_where_expected():
    assert set(ENDPOINTS) == set(CATEGORIES)
    assert HTTP_PATH_CATEGORIES["/v1/chat/completions"] == "inference"
    assert HTTP_PATH_CATEGORIES["/v2/models/{name}/versions/{version}/generate_stream"] == "inference"
    assert HTTP_PATH_CATEGORIES["/v2/repository/models/{name}/unload"] == "model-repository"
    assert HTTP_PATH_CATEGORIES["/v2/models/{name}/ready"] == "health"
    assert GRPC_METHOD_CATEGORIES[f"/{HEALTH_SERVICE}/Watch"] == "health"
    assert GRPC_METHOD_CATEGORIES[f"/{INFERENCE_SERVICE}/CudaSharedMemoryRegister"] == "shared-memory"
    assert GRPC_METHOD_CATEGORIES[f"/{INFERENCE_SERVICE}/TraceSetting"] == "trace"


def test_an_unrestricted_http_app_has_no_restriction_middleware():
    plain, _ = _http_paths()
    restricted, _ = _http_paths(["logging:admin-key=secret"])
    assert len(restricted.middlewares) == len(plain.middlewares) + 1


class _RecordingServer:
    """Takes what register_service registers, as grpc.Server would."""

    def __init__(self):
        self.registered: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers) -> None:
        self.registered = dict(handlers)


def _handlers() -> dict[str, grpc.RpcMethodHandler]:
    return {
        name: grpc.unary_unary_rpc_method_handler(lambda request, context: request)
        for name in ("ModelInfer", "LogSettings")
    }


def test_grpc_methods_left_unrestricted_keep_their_own_handler_objects():
    handlers = _handlers()
    server = _RecordingServer()
    rules = {f"/{INFERENCE_SERVICE}/LogSettings": parse_restrictions(["logging:k=v"], "f")["logging"]}
    register_service(server, INFERENCE_SERVICE, handlers, rules)
    assert server.registered["ModelInfer"] is handlers["ModelInfer"]  # not wrapped: no cost on its path
    assert server.registered["LogSettings"] is not handlers["LogSettings"]
    register_service(server, INFERENCE_SERVICE, handlers, {})
    assert all(server.registered[name] is handlers[name] for name in handlers)
