"""ModelStreamInfer in a frontend worker: one client stream, its requests split between the worker and the server.

A request for a model the worker serves (`AttachedModels.serves`) runs here, through the server's own stream
handling (`serve_infer_stream`) over the worker's dataplane. Any other goes on, as the bytes it came in, on one
ModelStreamInfer call to the primary, opened at the first such request and kept for the client's stream (an
unknown model's error is then the server's, word for word). Each side starts only when a request needs it.

Invariants:
- both sides' responses reach the client as they come; each request's own responses keep their order (one
  side serves all of them, in order); responses of different requests are not ordered relative to each other,
  as in Triton;
- the client's half-close half-closes the primary's call; the client's call ends once both sides finished;
- a client that cancels (or whose deadline passes) cancels both sides: local requests and the primary's call;
- the primary's call ending with a status other than OK ends the client's with that status (UNAVAILABLE naming
  the primary when it cannot be reached); a request that protobuf cannot decode ends it with INVALID_ARGUMENT,
  as the server's own handling does (decoding_handlers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from modelgate.server.dataplane import Dataplane
from modelgate.server.frontend_workers.attached_models import AttachedModels
from modelgate.server.frontend_workers.grpc_forwarding import Failure, PrimaryChannel, end_as
from modelgate.server.frontends.api_categories import INFERENCE_SERVICE
from modelgate.server.frontends.api_restrictions import HeaderRule
from modelgate.server.frontends.grpc.decoding_handlers import undecodable_message
from modelgate.server.frontends.grpc.restriction import is_permitted
from modelgate.server.frontends.grpc.stream_infer import serve_infer_stream

STREAM_METHOD = f"/{INFERENCE_SERVICE}/ModelStreamInfer"
_END = object()


def stream_split_handler(
    models: AttachedModels, dataplane: Dataplane, primary: PrimaryChannel, rule: HeaderRule | None
) -> grpc.RpcMethodHandler:
    """ModelStreamInfer's handler: raw requests in (decoded here, to route them), responses out as messages
    (served here) or bytes (the primary's, passed as they came). `rule`: what the method's restriction asks
    (--grpc-restricted-protocol); the primary checks its own calls again."""

    async def serve(raw_requests, context: grpc.aio.ServicerContext):
        if rule is not None and not is_permitted(rule, context.invocation_metadata()):
            refusal = rule.refusal("protocol")
            await context.abort(grpc.StatusCode[refusal.grpc_code], refusal.message)
        async for message in _SplitStream(models, dataplane, primary, context).run(raw_requests):
            yield message

    return grpc.stream_stream_rpc_method_handler(serve, response_serializer=_serialized)


def _serialized(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


class _SplitStream:
    """One client stream: the requests it routes, the two sides serving them, the responses merged."""

    def __init__(
        self, models: AttachedModels, dataplane: Dataplane, primary: PrimaryChannel, context: grpc.aio.ServicerContext
    ):
        self.models = models
        self.dataplane = dataplane
        self.primary = primary
        self.context = context
        self.outgoing: asyncio.Queue = asyncio.Queue()  # responses (messages or bytes), then _END
        self.failure: Failure | None = None
        self.local_requests: asyncio.Queue | None = None  # once a request is served here
        self.upstream: grpc.aio.StreamStreamCall | None = None  # once a request goes to the primary
        self.sides: list[asyncio.Task] = []  # what each started side does until it has no more responses

    async def run(self, raw_requests) -> AsyncIterator:
        reader = asyncio.create_task(self._route_all(raw_requests))
        try:
            while (message := await self.outgoing.get()) is not _END:
                yield message
            if self.failure is not None:
                await end_as(self.context, self.failure)
        finally:
            reader.cancel()
            for side in self.sides:
                side.cancel()  # the local side's cancellation cancels its requests (serve_infer_stream)
            if self.upstream is not None:
                self.upstream.cancel()  # does nothing once it ended

    async def _route_all(self, raw_requests) -> None:
        try:
            await self._route(raw_requests)
        except Exception as exc:  # the client's stream broke (then this call is being cancelled), or a fault here
            self._fail(Failure(grpc.StatusCode.INTERNAL, f"ModelStreamInfer: {type(exc).__name__}: {exc}"))

    async def _route(self, raw_requests) -> None:
        async for raw in raw_requests:
            try:
                request = service_pb2.ModelInferRequest.FromString(raw)
            except DecodeError as exc:
                problem = undecodable_message("ModelStreamInfer", service_pb2.ModelInferRequest, exc)
                self._fail(Failure(grpc.StatusCode.INVALID_ARGUMENT, problem))
                return
            if self.models.serves(request.model_name, request.model_version):
                self._serve_here(request)
            else:
                await self._send_on(raw)
        if self.local_requests is not None:
            self.local_requests.put_nowait(_END)
        if self.upstream is not None:
            await _ignoring_an_ended_call(self.upstream.done_writing())
        await asyncio.gather(*self.sides)
        self.outgoing.put_nowait(_END)

    def _serve_here(self, request: service_pb2.ModelInferRequest) -> None:
        if self.local_requests is None:
            self.local_requests = asyncio.Queue()
            self.sides.append(asyncio.create_task(self._relay_local()))
        self.local_requests.put_nowait(request)

    async def _send_on(self, raw: bytes) -> None:
        if self.upstream is None:
            self.upstream = self.primary.method(STREAM_METHOD, True, True)(**self.primary.call_options(self.context))
            self.sides.append(asyncio.create_task(self._relay_upstream()))
        # Awaited: a primary slow to read holds the client's requests back (HTTP/2 flow control, end to end).
        await _ignoring_an_ended_call(self.upstream.write(raw))

    async def _relay_local(self) -> None:
        async for message in serve_infer_stream(self.dataplane, self._local_requests()):
            self.outgoing.put_nowait(message)

    async def _local_requests(self):
        while (request := await self.local_requests.get()) is not _END:
            yield request

    async def _relay_upstream(self) -> None:
        try:
            async for raw in self.upstream:
                self.outgoing.put_nowait(raw)
        except grpc.aio.AioRpcError as error:
            self._fail(self.primary.failure(error))
            return
        trailing = await self.upstream.trailing_metadata()
        if trailing:
            self.context.set_trailing_metadata(tuple(trailing))

    def _fail(self, failure: Failure) -> None:
        """End the client's call with `failure` (the first one, if both sides fail) once what came is sent."""
        if self.failure is None:
            self.failure = failure
            self.outgoing.put_nowait(_END)


async def _ignoring_an_ended_call(operation) -> None:
    """A write or half-close on the primary's call once it ended: how it ended is its reader's to report."""
    try:
        await operation
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
