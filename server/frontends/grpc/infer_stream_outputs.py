"""Where the messages of a ModelStreamInfer session go (stream_infer.py): a queue its method yields from, or the
call's response writer (response_writer.py), which also takes an LLM's tokens as bytes.

Both take every message in the order given, from the loop: `put` (after awaiting `drained()` where one can
wait), `put_now` from a model's stream write-through (which waits for nothing), and `values_writer` is a
request's stream's values writer where the output has one. Where `takes_bytes`, a message may also come
serialized (bytes): the writer takes it as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from tritonclient.grpc import service_pb2

from modelgate.server.frontends.grpc.response_writer import ResponseWriter
from modelgate.server.frontends.grpc.value_responses import ValueResponseEncoder

Message = service_pb2.ModelStreamInferResponse


class ValueMessages(Protocol):
    """A request's message encoder (stream_infer.py): `values` is None until its first values response."""

    values: ValueResponseEncoder | None


class QueuedOutput:
    """The messages go into a queue that the method reads and yields (a transport with no response writer:
    grpcio's handler threads, grpc.aio in frontend workers). The queue has no bound, as before writers."""

    takes_bytes = False  # the method yields messages

    def __init__(self, queue: asyncio.Queue):
        self.put = queue.put_nowait

    def put_now(self, message: Message | None) -> bool:
        if message is not None:
            self.put(message)
        return True

    def drained(self) -> None:
        return None

    def values_writer(self, messages: ValueMessages) -> None:
        return None  # each value response goes through put_now as a message


class WriterOutput:
    """The messages go to the call's response writer as they come, with no hand-off to the method's task; a
    stream's tokens are serialized from their values alone (ValueResponseEncoder.serialize). While the client
    is behind, `put_now` and the values writer refuse: the stream then queues its items for its forwarding task,
    which awaits `drained()` before each `put`, as a handler awaits a slow HTTP client."""

    takes_bytes = True  # a request's first and last values responses come serialized (stream_infer.py)

    def __init__(self, writer: ResponseWriter):
        self._writer = writer
        self.drained = writer.drained

    def put(self, message: Message | bytes) -> None:
        if message.__class__ is bytes:
            self._writer.write_serialized(message)
        else:
            self._writer.write(message)

    def put_now(self, message: Message | bytes | None) -> bool:
        if message is None:
            return True
        if self._writer.drained() is not None:
            return False
        self.put(message)
        return True

    def values_writer(self, messages: ValueMessages) -> Callable[[dict], bool]:
        """A values writer for a request's stream (ResponseStream.write_values_through): its values responses go out
        as bytes built on the template of the request's earlier values response (`messages.values`, built by the
        first), and those that come before it or do not fit it are refused, to go out as responses."""
        try_write = self._writer.try_write_serialized

        def write_values(values: dict) -> bool:
            encoder = messages.values
            serialized = None if encoder is None else encoder.serialize(values)
            return serialized is not None and try_write(serialized)

        return write_values
