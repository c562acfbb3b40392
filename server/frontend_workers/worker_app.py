"""A frontend worker's HTTP app: the server's own routes for the LLM models it is attached to, the server
itself (through PrimaryProxy) for everything else.

A worker answers locally only what it can answer exactly as the server would: generation on an attached model
(generate, generate_stream, OpenAI completions and chat). Health, metadata, statistics, the repository,
logging, every other model, and an LLM whose engine is restarting go to the server, which stays the one
authority on models. The server checks restricted APIs and body limits again on what it is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web

from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import ModelgateError
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontend_workers.attached_models import AttachedModels
from modelgate.server.frontend_workers.http_proxy import PrimaryProxy
from modelgate.server.frontends.api_restrictions import HeaderRule
from modelgate.server.frontends.http.app import create_http_app
from modelgate.server.log_settings import LogSettings

# generate and generate_stream on a model, versioned or not (Triton's paths).
_GENERATE_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/generate(?:_stream)?$")
_OPENAI_GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


def create_worker_app(
    models: AttachedModels,
    dataplane: Dataplane,
    proxy: PrimaryProxy,
    log_settings: LogSettings,
    max_input_size: int,
    restrictions: Mapping[str, HeaderRule] | None = None,
) -> web.Application:
    """The server's app over the worker's dataplane, with the choice made last (innermost): errors, restricted
    APIs and the body limit are answered here as the server would, before anything is read or sent on."""
    app = create_http_app(dataplane, log_settings, max_input_size, restrictions)
    app.middlewares.append(_local_or_server(models, proxy))
    return app


def _local_or_server(models: AttachedModels, proxy: PrimaryProxy):
    @web.middleware
    async def route(request: web.Request, handler) -> web.StreamResponse:
        if request.method != "POST":
            return await proxy.forward(request)
        match = _GENERATE_PATH.match(request.path)
        if match is not None:
            if models.serves(match["name"], match["version"] or ""):
                return await handler(request)
            return await proxy.forward(request)
        if request.path in _OPENAI_GENERATION_PATHS:
            body = await request.read()  # kept by aiohttp: the handler reads it again
            if models.serves(_openai_model(body)):
                return await handler(request)
            return await proxy.forward(request, body)
        return await proxy.forward(request)

    return route


def _openai_model(body: bytes) -> str:
    """The body's `model`, or "" (the server then says what is wrong with the body)."""
    try:
        value = loads_bounded(body)
    except ModelgateError:
        return ""
    model = value.get("model") if isinstance(value, dict) else None
    return model if isinstance(model, str) else ""
