"""Every HTTP error as Triton's `{"error": "..."}` body with the status the error class fixes."""

from __future__ import annotations

import logging

from aiohttp import web

from modelgate.core.errors import ModelgateError, drop_traceback
from modelgate.server.frontends.openai.responses import openai_error

logger = logging.getLogger(__name__)


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def route_error_response(request: web.Request, status: int, message: str) -> web.Response:
    """An error answered before a route's handler runs: OpenAI's error object on /v1/ routes (their clients
    read it), Triton's `{"error": ...}` elsewhere."""
    if request.path.startswith("/v1/"):
        return openai_error(status, message)
    return error_response(status, message)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ModelgateError as exc:
        drop_traceback(exc)  # its frames hold the request: freed now, not at the next full collection
        return error_response(exc.http_status, exc.message)
    except web.RequestPayloadError as exc:  # e.g. a body that is not what Content-Encoding says
        return error_response(400, f"request body cannot be read: {_payload_problem(exc)}")
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, f"{exc.reason}: {request.method} {request.path}")
        raise
    except Exception as exc:  # a bug: keep serving, say so, log the trace
        logger.exception("unhandled error for %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def _payload_problem(exc: web.RequestPayloadError) -> str:
    """aiohttp's own message ("Can not decode content-encoding: gzip") without its status prefix."""
    message = getattr(exc.__cause__, "message", None)
    return message if isinstance(message, str) and message else str(exc)
