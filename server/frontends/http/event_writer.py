"""Server-sent events on an aiohttp StreamResponse, written at once where the socket's buffer takes them.

`write` is aiohttp's own (it awaits the client when the buffer is full). `write_now` puts an event into the
transport's buffer without awaiting, framed as aiohttp frames the body (HTTP/1.1 chunks, raw for HTTP/1.0),
so that a ResponseStream's write-through can send an LLM token from the code that delivers it, with no
wake-up of the handler's task. `can_write_now` says no while the client is behind or gone; the handler then
writes that event itself through `write`, which waits for the client.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from aiohttp import web
from aiohttp.http import HttpVersion11

HIGH_WATER_BYTES = 64 * 1024  # past this many unsent bytes, aiohttp's own write waits for the client too
EVENT_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8"}


encode_json = msgspec.json.Encoder().encode  # a tenth of json.dumps' time: paid per streamed token


def event(payload: dict) -> bytes:
    """One `data:` event holding `payload` as compact JSON (non-ASCII text as UTF-8)."""
    return b"data: " + encode_json(payload) + b"\n\n"


def event_of(payload_json: bytes) -> bytes:
    """One `data:` event holding `payload_json`, JSON encoded already."""
    return b"data: %b\n\n" % payload_json


class EventWriter:
    def __init__(self, request: web.Request, headers: dict[str, str] | None = None):
        self.request = request
        self.reply = web.StreamResponse(headers=headers or EVENT_HEADERS)
        self._is_chunked = request.version == HttpVersion11
        self._has_written = False  # aiohttp sends the headers with the first body bytes
        self._transport = None  # the connection's, once started: looked up through the request per event otherwise

    @property
    def is_started(self) -> bool:
        return self.reply.prepared

    async def start(self) -> None:
        if self._is_chunked:  # chosen here, as aiohttp would, so that write_now frames as aiohttp does
            self.reply.enable_chunked_encoding()
        await self.reply.prepare(self.request)
        self._transport = self.request.transport

    async def write(self, data: bytes) -> None:
        await self.reply.write(data)
        self._has_written = True

    def can_write_now(self) -> bool:
        """Whether `write_now` may write: the headers are out and the client keeps up with what was sent."""
        transport = self._transport
        if not self._has_written or transport is None or transport.is_closing():
            return False
        return transport.get_write_buffer_size() <= HIGH_WATER_BYTES

    def write_now(self, data: bytes) -> None:
        """Put `data` into the socket's buffer without awaiting; only where `can_write_now()` said so."""
        self._transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self._is_chunked else data)

    def write_event_now(self, payload_json: bytes) -> None:
        """`write_now(event_of(payload_json))`, framed in one step: paid per streamed token."""
        if self._is_chunked:  # the chunk holds `data: `, the JSON and the blank line: 8 bytes around it
            self._transport.write(b"%x\r\ndata: %b\n\n\r\n" % (len(payload_json) + 8, payload_json))
        else:
            self._transport.write(b"data: %b\n\n" % payload_json)

    def object_writer(self, head: bytes, head_keys: frozenset[str]) -> Callable[[dict], bool]:
        """Once started and written to: `write(values)` writes at once, where `can_write_now()` would say so,
        the event holding the JSON object of `head`'s members followed by those of `values` (`head`: such an
        object's JSON without its closing brace), and returns True; False, writing nothing, where it would not
        or where `values` has a key of `head_keys` (the keys of `head`: the object would hold one twice)."""
        assert self._has_written, "the headers go out with the first write: object writers write after it"
        return _ObjectEvents(self._transport, head, head_keys, self._is_chunked).write

    async def finish(self, last: bytes = b"") -> web.StreamResponse:
        """End the body after `last` (the stream's last bytes, e.g. its last event): the same bytes as
        `write(last)` then the end, in one write to the socket rather than two."""
        if not self.reply.prepared:
            await self.start()  # zero events: an empty event stream
        await self.reply.write_eof(last)
        return self.reply


class _ObjectEvents:
    """EventWriter.object_writer: one object holding all that writing a streamed token needs. An engine step
    meets the CPU caches cold (the engine, the kernel's socket writes and the clients ran since the last one),
    so each object a token's path touches costs a cache miss or more."""

    __slots__ = ("_transport", "_prefix", "_empty", "_head_keys", "_is_chunked")

    def __init__(self, transport, head: bytes, head_keys: frozenset[str], is_chunked: bool):
        self._transport, self._head_keys, self._is_chunked = transport, head_keys, is_chunked
        self._prefix = b"data: " + head + b","  # an event up to the members of `values`
        self._empty = b"data: " + head + b"}\n\n"  # the event of no values

    def write(self, values: dict) -> bool:
        transport = self._transport
        if transport.is_closing() or transport.get_write_buffer_size() > HIGH_WATER_BYTES:
            return False
        if not self._head_keys.isdisjoint(values):
            return False
        # `{...}` encoded: its `{` gives way to the comma behind the head's members. Concatenation, not
        # %-formatting: a third less time, paid per streamed token.
        event = self._prefix + encode_json(values)[1:] + b"\n\n" if values else self._empty
        transport.write(b"%x\r\n%b\r\n" % (len(event), event) if self._is_chunked else event)
        return True
