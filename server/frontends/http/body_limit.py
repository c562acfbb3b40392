"""The largest request body (`--http-max-input-size`, as Triton's), refused with 413 before it is read.

aiohttp's `client_max_size` is the same limit; it counts the bytes as `request.read()` takes them (after
gzip/deflate decoding, so a compressed bomb stops at the limit too) and stops reading there. A declared
Content-Length past the limit is refused at once, before any of the body is read: the client's bytes are
never buffered, and the connection is closed rather than drained.
"""

from __future__ import annotations

from aiohttp import web

from modelgate.server.frontends.http.error_middleware import route_error_response

FLAG = "--http-max-input-size"


def too_large_message(limit: int, size: int | None) -> str:
    declared = f" of {size} bytes" if size is not None else ""
    return f"request body{declared} is larger than the server's limit of {limit} bytes ({FLAG})"


def body_limit_middleware(limit: int):
    """Middleware answering 413 (OpenAI's error object on /v1/ routes) for a body larger than `limit`."""

    @web.middleware
    async def check(request: web.Request, handler):
        size = request.content_length
        if size is not None and size > limit:
            return _refused(request, too_large_message(limit, size))
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:  # chunked or compressed: aiohttp stopped reading at the limit
            return _refused(request, too_large_message(limit, None))

    return check


def _refused(request: web.Request, message: str) -> web.Response:
    response = route_error_response(request, 413, message)
    response.force_close()  # the rest of the body is still coming: don't read it to reuse the connection
    return response
