"""Forward a gRPC call from a frontend worker to the primary, which serves its gRPC service on a Unix socket too.

Messages pass as bytes both ways (the channel's methods have no serializers: nothing is parsed), with the
client's metadata and deadline; the primary's status code, details and metadata come back unchanged, so that a
client cannot tell which process took its connection. The server checks restricted methods and message sizes
again on what it is sent. If the primary cannot be reached, the call ends UNAVAILABLE, naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import NamedTuple

import grpc
import grpc.aio

from modelgate.server.settings import MAX_GRPC_MESSAGE_BYTES

__all__ = ["Failure", "PrimaryChannel", "forwarding_handlers"]

# grpc sends these itself on each hop: the user agent names the client's connection to the worker (the worker's
# channel sends its own), and grpc-core refuses pseudo-headers and reserved `grpc-` keys as call metadata.
_NOT_FORWARDED = frozenset(("user-agent", "te", "content-type", "host"))
_RESERVED_PREFIXES = (":", "grpc-")


class Failure(NamedTuple):
    """How a call to the primary ended, for the client's call to end the same way."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple = ()


class PrimaryChannel:
    """One grpc.aio channel (one HTTP/2 connection) to the primary's Unix socket, opened on first use."""

    def __init__(self, socket_path: str):
        self.target = f"unix:{socket_path}"
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, object] = {}

    def method(self, path: str, request_streaming: bool, response_streaming: bool):
        """The multi-callable for the method at wire path `path` (`/package.Service/Method`), bytes in and out."""
        method = self._methods.get(path)
        if method is None:
            channel = self._open()
            if request_streaming:
                factory = channel.stream_stream if response_streaming else channel.stream_unary
            else:
                factory = channel.unary_stream if response_streaming else channel.unary_unary
            method = self._methods[path] = factory(path, request_serializer=None, response_deserializer=None)
        return method

    def call_options(self, context: grpc.aio.ServicerContext) -> dict:
        """The client's metadata and what is left of its deadline, for the call to the primary."""
        metadata = tuple(
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key not in _NOT_FORWARDED and not key.startswith(_RESERVED_PREFIXES)
        )
        return {"metadata": metadata, "timeout": context.time_remaining()}

    def failure(self, error: grpc.aio.AioRpcError) -> Failure:
        """The primary's status as it sent it; UNAVAILABLE naming the primary when no answer came from it."""
        details = error.details() or ""
        if error.code() is grpc.StatusCode.UNAVAILABLE and not self._is_connected():
            # The primary answers UNAVAILABLE itself (a model whose engine restarts): that passes unchanged. With
            # no connection up, the status is the channel's own: no primary said anything.
            details = f"the primary server at {self.target} cannot be reached: {details}"
        return Failure(error.code(), details, tuple(error.trailing_metadata() or ()))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._methods.clear()

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            # As large as the server's own limits: the primary checks them again.
            options = [
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
            ]
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        return self._channel

    def _is_connected(self) -> bool:
        return self._channel is not None and self._channel.get_state() is grpc.ChannelConnectivity.READY


async def end_as(context: grpc.aio.ServicerContext, failure: Failure) -> None:
    """End the client's call with `failure` (raises, as `context.abort` does)."""
    await context.abort(failure.code, failure.details, failure.trailing_metadata)


def forwarding_handlers(
    primary: PrimaryChannel, service, local: Mapping[str, grpc.RpcMethodHandler] | None = None
) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> handler for every method of `service` (a protobuf ServiceDescriptor): `local`'s where it
    has one, else one forwarding the call to the primary. Streaming requests are only served locally."""
    local = local or {}
    handlers = {}
    for method in service.methods:
        if method.name in local:
            handlers[method.name] = local[method.name]
        elif method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: forwarding a client stream needs a handler of its own")
        else:
            path = f"/{service.full_name}/{method.name}"
            handlers[method.name] = _forwarding(primary, path, method.server_streaming)
    return handlers


def _forwarding(primary: PrimaryChannel, path: str, response_streaming: bool) -> grpc.RpcMethodHandler:
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(_forward_unary_stream(primary, path))
    return grpc.unary_unary_rpc_method_handler(_forward_unary(primary, path))


def _forward_unary(primary: PrimaryChannel, path: str):
    async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = primary.method(path, False, False)(request, **primary.call_options(context))
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            await end_as(context, primary.failure(error))
        except asyncio.CancelledError:  # the client left: the primary stops working for it
            call.cancel()
            raise
        await _pass_metadata(call, context)
        return response

    return forward


def _forward_unary_stream(primary: PrimaryChannel, path: str):
    async def forward(request: bytes, context: grpc.aio.ServicerContext):
        call = primary.method(path, False, True)(request, **primary.call_options(context))
        try:
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(initial)
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            await end_as(context, primary.failure(error))
        finally:
            call.cancel()  # does nothing once the call ended; else (the client left) the primary stops
        context.set_trailing_metadata(tuple(await call.trailing_metadata()))

    return forward


async def _pass_metadata(call, context: grpc.aio.ServicerContext) -> None:
    initial = await call.initial_metadata()
    if initial:
        await context.send_initial_metadata(initial)
    context.set_trailing_metadata(tuple(await call.trailing_metadata()))
