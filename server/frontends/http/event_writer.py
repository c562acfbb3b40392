"""Server-sent events on an aiohttp StreamResponse, written at once where the socket's buffer takes them.

`write` is aiohttp's own (it awaits the client when the buffer is full). `write_now` puts an event into the
transport's buffer without awaiting, framed as aiohttp frames the body (HTTP/1.1 chunks, raw for HTTP/1.0),
so that a ResponseStream's write-through can send an LLM token from the code that delivers it, with no
wake-up of the handler's task. `can_write_now` says no while the client is behind or gone; the handler then
writes that event itself through `write`, which waits for the client.
"""

from __future__ import annotations

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

    async def finish(self) -> web.StreamResponse:
        if not self.reply.prepared:
            await self.start()  # zero events: an empty event stream
        await self.reply.write_eof()
        return self.reply
