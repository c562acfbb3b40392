"""Registering a service's method handlers on grpcio's server, restricted methods guarded.

grpcio looks a method up two ways: registered methods (the generated stubs' calls) and generic handlers (any
other client); both get the same handlers, as the generated `add_*Servicer_to_server` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import grpc

from modelgate.server.frontends.api_restrictions import HeaderRule
from modelgate.server.frontends.grpc.restriction import metadata_guard

# (request streaming, response streaming) -> the handler's behaviour attribute and the factory of such handlers.
_KINDS = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def servicer_handlers(servicer, messages: ModuleType, service_name: str) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> handler of `servicer` for the service `service_name` of the `messages` module (a *_pb2),
    with protobuf's own (de)serializers: what the generated registration builds, read from the descriptor."""
    service = messages.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in service.methods:
        _, factory = _KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=getattr(messages, method.input_type.name).FromString,
            response_serializer=getattr(messages, method.output_type.name).SerializeToString,
        )
    return handlers


def register_service(
    server: grpc.Server,
    service_full_name: str,
    handlers: Mapping[str, grpc.RpcMethodHandler],
    rules: Mapping[str, HeaderRule],
) -> None:
    """Serve `handlers` (method name -> handler) as `service_full_name`; `rules`: method wire path
    (`/package.Service/Method`) -> the metadata it needs, for the restricted methods only."""
    served = {}
    for name, handler in handlers.items():
        rule = rules.get(f"/{service_full_name}/{name}")
        served[name] = handler if rule is None else _guarded(handler, rule)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_full_name, served),))
    server.add_registered_method_handlers(service_full_name, served)


def _guarded(handler: grpc.RpcMethodHandler, rule: HeaderRule) -> grpc.RpcMethodHandler:
    attribute, factory = _KINDS[(handler.request_streaming, handler.response_streaming)]
    return factory(
        metadata_guard(getattr(handler, attribute), rule),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
