"""ModelStreamInfer: many requests in, their responses out, interleaved on one stream.

Each request read from the client starts at once; its responses are written as they come
(a decoupled model's 0..n, or the single response of any other model), each carrying
`triton_final_response`. A final flag without a response is written only when the
request asked for it with `triton_enable_empty_final_response`. A request that fails
before it runs, and a response that carries an error, are answered with `error_message`
plus an `infer_response` naming the request (id, model, version, final flag) as Triton
does, so that clients can tell which request failed; the stream goes on. When the client
cancels or disconnects, every request still running is cancelled.

Served on the loop (loop_stream.py), the messages are written through the call's response writer as
they come (`write_infer_stream`), and an LLM's responses (its tokens, and a request's first and last) as bytes
built on their request's template (value_responses.py): no protobuf message is built for them; elsewhere (grpcio's handler threads, grpc.aio in frontend workers) the method
yields them from a queue (`serve_infer_stream`). Through the queue, each token cost a protobuf message,
its serialization and a hop through two async generators; written, tiny_llm streaming to 64 clients on
the 2-core VM took 25-29 µs of server CPU per token against 31-39 µs (benchmarks/
llm_server_cpu_per_token.py --protocols grpc --num-requests 1024, three runs each, alternated). Of the
rest, grpc core's start of each send (its inline socket write included) takes ~10 µs and its polling
thread's completion of it ~4 µs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from tritonclient.grpc import service_pb2

from modelgate.core.errors import ModelgateError
from modelgate.core.inference_types import InferRequest, InferResponse
from modelgate.core.response_stream import ResponseStream, StreamItem
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontends.grpc.infer_codec import decode_infer_request, encode_infer_response
from modelgate.server.frontends.grpc.infer_stream_outputs import QueuedOutput, WriterOutput
from modelgate.server.frontends.grpc.response_writer import ResponseWriter
from modelgate.server.frontends.grpc.value_responses import FINAL_PARAMETER, ValueResponseEncoder

logger = logging.getLogger(__name__)

EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
_END = object()


async def serve_infer_stream(dataplane: Dataplane, incoming) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
    """The stream's messages, for the method to yield: where the transport has no response writer."""
    outgoing: asyncio.Queue = asyncio.Queue()
    session = _StreamSession(dataplane, QueuedOutput(outgoing))
    reader = asyncio.create_task(_read_then_end(session, incoming, outgoing))
    try:
        while True:
            message = await outgoing.get()
            if message is _END:
                break
            yield message
    finally:
        reader.cancel()
        session.cancel_all()


async def write_infer_stream(dataplane: Dataplane, incoming, writer: ResponseWriter) -> None:
    """The same stream, its messages written through the call's `writer` as they come (infer_stream_outputs.py);
    returns once the client half-closed and every request is answered."""
    session = _StreamSession(dataplane, WriterOutput(writer))
    try:
        await session.read_all(incoming)
    finally:
        session.cancel_all()


async def _read_then_end(session: _StreamSession, incoming, outgoing: asyncio.Queue) -> None:
    try:
        await session.read_all(incoming)
    finally:
        outgoing.put_nowait(_END)


class _StreamSession:
    """The requests of one ModelStreamInfer call and the tasks forwarding their responses."""

    def __init__(self, dataplane: Dataplane, output: QueuedOutput | WriterOutput):
        self.dataplane = dataplane
        self.output = output
        self.streams: set[ResponseStream] = set()
        self.forwarders: set[asyncio.Task] = set()

    async def read_all(self, incoming) -> None:
        async for message in incoming:
            await self._start(message)
        if self.forwarders:
            await asyncio.gather(*list(self.forwarders), return_exceptions=True)

    def cancel_all(self) -> None:
        for stream in self.streams:
            stream.cancel()
        for task in self.forwarders:
            task.cancel()

    async def _start(self, message: service_pb2.ModelInferRequest) -> None:
        try:
            request = decode_infer_request(message)
            request.can_take_output_values = True  # see value_responses.py
            stream = await self.dataplane.infer_stream(request)
        except ModelgateError as exc:
            target = service_pb2.ModelInferResponse(
                model_name=message.model_name, model_version=message.model_version, id=message.id
            )
            self.output.put(_error_message(exc.message, target, is_final=True))
            return
        self.streams.add(stream)
        task = asyncio.create_task(self._forward(request, stream))
        self.forwarders.add(task)
        task.add_done_callback(self.forwarders.discard)

    async def _forward(self, request: InferRequest, stream: ResponseStream) -> None:
        """Every item but the final one goes out through the stream's write-through, in the call that delivers
        it, and values responses through its values writer, where the output has one; this task wakes for the
        rest: the final item, and the items the output refused (the client behind)."""
        messages = _MessageEncoder(self.dataplane, request, as_bytes=self.output.takes_bytes)
        output = self.output
        stream.write_through(lambda item: output.put_now(messages.encode(item)))
        if (write_values := output.values_writer(messages)) is not None:
            stream.write_values_through(write_values)
        try:
            async for item in stream:
                message = messages.encode(item)
                if message is None:
                    continue
                if (drained := output.drained()) is not None:
                    await drained
                output.put(message)
        finally:
            self.streams.discard(stream)
            # Cancelled before its final item (the RPC ended while the session waited for its forwarders, whose
            # cancellation comes before the session's own): the request must hear it, as from cancel_all.
            stream.cancel()


class _MessageEncoder:
    """The stream messages of one request: its responses, errors, and the final flag where asked for. With
    `as_bytes`, values responses come serialized (the same bytes as their messages serialized)."""

    def __init__(self, dataplane: Dataplane, request: InferRequest, as_bytes: bool = False):
        self.dataplane = dataplane
        self.request = request
        self.as_bytes = as_bytes
        self.wants_empty_final = bool(request.parameters.get(EMPTY_FINAL_PARAMETER, False))
        self.values: ValueResponseEncoder | None = None  # built for the first response that carries values

    def encode(self, item: StreamItem) -> service_pb2.ModelStreamInferResponse | bytes | None:
        response = item.response
        if response is None:
            return _final_message(self.request, item.is_final) if self.wants_empty_final else None
        if response.error is not None:
            return _error_message(response.error.message, _bare_response(self.request), item.is_final)
        try:
            if response.values is not None:
                if self.as_bytes:
                    return self._value_encoder(response).serialize_response(response, item.is_final)
                return self._value_encoder(response).encode(response, item.is_final)
            infer_response = encode_infer_response(response)
        except ModelgateError as exc:  # e.g. a response parameter that has no gRPC form
            return _error_message(exc.message, _bare_response(self.request), item.is_final)
        infer_response.parameters[FINAL_PARAMETER].bool_param = item.is_final
        return service_pb2.ModelStreamInferResponse(infer_response=infer_response)

    def _value_encoder(self, response: InferResponse) -> ValueResponseEncoder:
        if self.values is None:
            metadata = self.dataplane.model_metadata(response.model_name, response.model_version)
            self.values = ValueResponseEncoder({output["name"]: output["datatype"] for output in metadata["outputs"]})
        return self.values


def _final_message(request: InferRequest, is_final: bool) -> service_pb2.ModelStreamInferResponse:
    infer_response = _bare_response(request)
    infer_response.parameters[FINAL_PARAMETER].bool_param = is_final
    return service_pb2.ModelStreamInferResponse(infer_response=infer_response)


def _bare_response(request: InferRequest) -> service_pb2.ModelInferResponse:
    return service_pb2.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )


def _error_message(message: str, target: service_pb2.ModelInferResponse, is_final: bool):
    target.parameters[FINAL_PARAMETER].bool_param = is_final
    return service_pb2.ModelStreamInferResponse(error_message=message, infer_response=target)
