"""A service's handlers registered to take raw bytes and decode them themselves.

grpcio runs a handler's `request_deserializer` before the handler, and a message that protobuf cannot decode
ends the RPC with grpcio's own status (UNKNOWN/INTERNAL, "Exception deserializing request!"), which a client
reads as a server fault. Registered here with no deserializer, each handler receives the message's bytes and
decodes them on the same handler thread (the same work, in the same place), so that a message that fails
ends its RPC with INVALID_ARGUMENT naming the method and the message type:

- a unary method aborts at once;
- a stream method ends the whole stream with that status (its earlier requests are cancelled): after a
  message that cannot be read, the client's stream has no meaning to go on with.

This replaces the generated `add_*Servicer_to_server`; the methods, their paths and their response
serializers are read from the service's descriptor, so they are the generated code's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import ModuleType

import grpc
from google.protobuf.message import DecodeError

from modelgate.server.frontends.api_restrictions import HeaderRule
from modelgate.server.frontends.grpc.infer_request_bytes import parse_infer_request
from modelgate.server.frontends.grpc.loop_calls import LoopCalls
from modelgate.server.frontends.grpc.registration import register_service
from modelgate.server.frontends.grpc.threaded_bridge import RpcAbort


def add_decoding_servicer(
    servicer,
    server: grpc.Server,
    messages: ModuleType,
    service_name: str,
    rules: Mapping[str, HeaderRule] | None = None,
    sized: Mapping[str, Callable[[int], None]] | None = None,
    loop_calls: LoopCalls | None = None,
) -> None:
    """Register `servicer`'s methods for the service `service_name` of the `messages` module (a *_pb2);
    `rules`: method wire path -> the metadata it needs (--grpc-restricted-protocol), checked before decoding;
    `sized`: method name -> what hears the size of each of its request messages (the bytes as they came: a
    decoded message's ByteSize() would encode it again). `loop_calls`: where the methods that `servicer` has as
    coroutines or async generators run with no handler thread (loop_calls.py); None: all on grpc's handler
    threads."""
    service = messages.DESCRIPTOR.services_by_name[service_name]
    sized = sized or {}
    handlers = {
        method.name: _handler(servicer, method, messages, sized.get(method.name, _ignore), loop_calls)
        for method in service.methods
    }
    register_service(server, service.full_name, handlers, rules or {})


def _handler(
    servicer, method, messages: ModuleType, observe_size: Callable[[int], None], loop_calls: LoopCalls | None
) -> grpc.RpcMethodHandler:
    request_class = getattr(messages, method.input_type.name)
    # What decodes a request: protobuf's FromString, or for inference requests the parse that leaves their raw
    # contents in the received bytes (infer_request_bytes.py).
    parse = _PARSERS.get(request_class.DESCRIPTOR.full_name, request_class.FromString)
    serializer = getattr(messages, method.output_type.name).SerializeToString
    behaviour = getattr(servicer, method.name)
    if not method.client_streaming and not method.server_streaming:
        unary = _decoding_unary(behaviour, request_class, parse, method.name, observe_size)
        coroutine = _loop_method(servicer, "coroutine_method", method.name) if loop_calls is not None else None
        if coroutine is not None:
            on_loop = _decoding_coroutine(coroutine, request_class, parse, method.name, observe_size)
            unary = loop_calls.unary_handler(unary, on_loop, serializer)
        return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serializer)
    if method.client_streaming and method.server_streaming:
        stream = _decoding_stream(behaviour, request_class, parse, method.name, observe_size)
        generator = _loop_method(servicer, "async_generator_method", method.name) if loop_calls is not None else None
        if generator is not None:
            decode = _stream_decoder(request_class, parse, method.name, observe_size)
            stream = loop_calls.stream_handler(stream, generator, decode, serializer)
        return grpc.stream_stream_rpc_method_handler(stream, response_serializer=serializer)
    raise NotImplementedError(f"{method.full_name}: only unary-unary and stream-stream methods are served")


def _decoding_unary(behaviour: Callable, request_class, parse, method_name: str, observe_size) -> Callable:
    def handle(raw: bytes, context: grpc.ServicerContext):
        observe_size(len(raw))
        try:
            request = parse(raw)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, undecodable_message(method_name, request_class, exc))
        return behaviour(request, context)

    return handle


def _decoding_coroutine(method: Callable, request_class, parse, method_name: str, observe_size) -> Callable:
    """`_decoding_unary` for a coroutine method run on the loop: a message that fails ends the RPC with
    INVALID_ARGUMENT (RpcAbort)."""

    async def handle(raw: bytes, context):
        observe_size(len(raw))
        try:
            request = parse(raw)
        except DecodeError as exc:
            raise RpcAbort(
                grpc.StatusCode.INVALID_ARGUMENT, undecodable_message(method_name, request_class, exc)
            ) from None
        return await method(request, context)

    return handle


def _loop_method(servicer, finder: str, name: str) -> Callable | None:
    """The servicer's method `name` as `finder` (a ThreadedServicer's) finds it for the loop, or None."""
    find = getattr(servicer, finder, None)
    return None if find is None else find(name)


def _decoding_stream(behaviour: Callable, request_class, parse, method_name: str, observe_size) -> Callable:
    def handle(raw_requests: Iterator[bytes], context: grpc.ServicerContext):
        return behaviour(_decoded(raw_requests, request_class, parse, method_name, observe_size), context)

    return handle


def _decoded(raw_requests: Iterator[bytes], request_class, parse, method_name: str, observe_size) -> Iterator:
    """The stream's requests, decoded; RpcAbort (INVALID_ARGUMENT) at the first one that cannot be."""
    decode = _stream_decoder(request_class, parse, method_name, observe_size)
    for raw in raw_requests:
        yield decode(raw)


def _stream_decoder(request_class, parse, method_name: str, observe_size) -> Callable[[bytes], object]:
    """One request of a stream, decoded; RpcAbort (INVALID_ARGUMENT) if it cannot be."""

    def decode(raw: bytes):
        observe_size(len(raw))
        try:
            return parse(raw)
        except DecodeError as exc:
            raise RpcAbort(
                grpc.StatusCode.INVALID_ARGUMENT, undecodable_message(method_name, request_class, exc)
            ) from None

    return decode


def undecodable_message(method_name: str, request_class, exc: DecodeError) -> str:
    """What INVALID_ARGUMENT says of a request that protobuf cannot decode."""
    full_name = request_class.DESCRIPTOR.full_name
    return f"{method_name}: the request is not a valid {full_name} protobuf message ({exc})"


_PARSERS = {"inference.ModelInferRequest": parse_infer_request}


def _ignore(size: int) -> None:
    pass
