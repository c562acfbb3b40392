"""The KServe v2 HTTP routes with Triton's extensions. Handlers decode, call the dataplane, encode."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import InvalidArgumentError, ResponseCountError, drop_traceback
from modelgate.core.response_stream import StreamItem
from modelgate.server.dataplane import Dataplane
from modelgate.server.frontends.api_categories import MODEL_PATH, VERSIONED_MODEL_PATH
from modelgate.server.frontends.api_restrictions import HeaderRule
from modelgate.server.frontends.http.body_limit import body_limit_middleware
from modelgate.server.frontends.http.error_middleware import error_middleware
from modelgate.server.frontends.http.event_writer import EventWriter, event_of
from modelgate.server.frontends.http.generate_codec import (
    decode_generate_request,
    encode_generate_response,
    encode_response_count_error,
)
from modelgate.server.frontends.http.generate_events import HEAD_KEYS, GenerateEventEncoder
from modelgate.server.frontends.http.infer_codec import (
    HEADER_LENGTH,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from modelgate.server.frontends.http.response_compression import compress_if_asked
from modelgate.server.frontends.http.restriction import restriction_middleware
from modelgate.server.frontends.http.shared_memory_routes import add_shared_memory_routes
from modelgate.server.frontends.openai.routes import add_openai_routes
from modelgate.server.log_settings import LogSettings
from modelgate.server.settings import DEFAULT_HTTP_MAX_INPUT_SIZE


def create_http_app(
    dataplane: Dataplane,
    log_settings: LogSettings,
    max_input_size: int = DEFAULT_HTTP_MAX_INPUT_SIZE,
    restrictions: Mapping[str, HeaderRule] | None = None,
) -> web.Application:
    """`max_input_size`: the largest request body in bytes (--http-max-input-size); larger ones get 413.
    `restrictions`: restricted category -> the header it needs (--http-restricted-api); checked before the
    body limit, so a client without the header learns nothing more."""
    restriction = restriction_middleware(restrictions or {})
    middlewares = [error_middleware, *([restriction] if restriction else []), body_limit_middleware(max_input_size)]
    app = web.Application(middlewares=middlewares, client_max_size=max_input_size)
    handlers = _Handlers(dataplane, log_settings)
    app.router.add_get("/v2/health/live", handlers.live)
    app.router.add_get("/v2/health/ready", handlers.ready)
    app.router.add_get("/v2", handlers.server_metadata)
    app.router.add_get("/v2/models/stats", handlers.statistics)
    app.router.add_post("/v2/repository/index", handlers.repository_index)
    app.router.add_post("/v2/repository/models/{name}/load", handlers.load)
    app.router.add_post("/v2/repository/models/{name}/unload", handlers.unload)
    app.router.add_get("/v2/logging", handlers.get_logging)
    add_openai_routes(app, dataplane)
    add_shared_memory_routes(app, dataplane)
    app.router.add_post("/v2/logging", handlers.update_logging)
    for prefix in (MODEL_PATH, VERSIONED_MODEL_PATH):
        app.router.add_get(prefix, handlers.model_metadata)
        app.router.add_get(prefix + "/ready", handlers.model_ready)
        app.router.add_get(prefix + "/config", handlers.model_config)
        app.router.add_get(prefix + "/stats", handlers.statistics)
        app.router.add_post(prefix + "/infer", handlers.infer)
        app.router.add_post(prefix + "/generate", handlers.generate)
        app.router.add_post(prefix + "/generate_stream", handlers.generate_stream)
    return app


class _Handlers:
    def __init__(self, dataplane: Dataplane, log_settings: LogSettings):
        self.dataplane = dataplane
        self.log_settings = log_settings

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.dataplane.server_ready() else 400)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(self.dataplane.server_metadata())

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = _target(request)
        await self.dataplane.prepare(name, version)
        return _json(self.dataplane.model_metadata(name, version))

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = _target(request)
        return web.Response(status=200 if self.dataplane.model_ready(name, version) else 400)

    async def model_config(self, request: web.Request) -> web.Response:
        name, version = _target(request)
        await self.dataplane.prepare(name, version)
        return _json(self.dataplane.model_config(name, version))

    async def statistics(self, request: web.Request) -> web.Response:
        name, version = _target(request)
        return _json(self.dataplane.statistics(name, version))

    async def infer(self, request: web.Request) -> web.Response:
        name, version = _target(request)
        # Binary inputs are read-only arrays over the body (python models get writable copies, as over gRPC).
        body = await request.read()
        header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
        infer_request = decode_infer_request(body, header_length, name, version)
        response = await self.dataplane.infer(infer_request)
        if response.error is not None:
            raise response.error
        payload, json_length = encode_infer_response(response, infer_request)
        if json_length is None:
            return compress_if_asked(
                request.headers.get("Accept-Encoding", ""), web.Response(body=payload, content_type="application/json")
            )
        reply = web.Response(body=payload, content_type="application/octet-stream")
        reply.headers[HEADER_LENGTH] = str(json_length)
        return compress_if_asked(request.headers.get("Accept-Encoding", ""), reply)

    async def generate(self, request: web.Request) -> web.Response:
        """Exactly one response expected; a decoupled model that sends another count gets Triton's answer, an
        error body with status 200 (generate_codec.py)."""
        try:
            response = await self.dataplane.infer(await self._generate_request(request))
        except ResponseCountError as exc:
            return _json(encode_response_count_error(drop_traceback(exc)))
        if response.error is not None:
            raise response.error
        return _json(encode_generate_response(response))

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events, one `data:` event per response.

        A request that fails before its first response gets a plain JSON error with its status
        (the SSE stream has not started); errors after that are `{"error": ...}` events. Once the first
        event is out, the stream writes later ones through (see EventWriter) and this task wakes only
        for what needs a wait: a client behind, the last event.
        """
        infer_request = await self._generate_request(request)
        stream = await self.dataplane.infer_stream(infer_request)
        writer = EventWriter(request)
        events = GenerateEventEncoder()
        try:
            async for item in stream:
                if item.response is None:
                    continue
                if not writer.is_started:
                    if item.response.error is not None:
                        raise item.response.error
                    await writer.start()
                    stream.write_through(lambda item: _write_now(writer, events, item))
                    await writer.write(event_of(events.encode(item.response)))
                    if events.head is not None:  # the LLM's tokens: their values go behind the first event's head
                        stream.write_values_through(writer.object_writer(events.head, HEAD_KEYS))
                    continue
                if item.is_final:  # the last event and the end of the body go out together
                    return await writer.finish(event_of(events.encode(item.response)))
                await writer.write(event_of(events.encode(item.response)))
            return await writer.finish()
        finally:
            stream.cancel()  # a client that went away cancels what is still running

    async def _generate_request(self, request: web.Request):
        name, version = _target(request)
        metadata = self.dataplane.model_metadata(name, version)
        return decode_generate_request(await _json_body(request), name, version, metadata)

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgumentError("repository index: 'ready' must be a boolean")
        return _json(self.dataplane.repository_index(ready))

    async def load(self, request: web.Request) -> web.Response:
        parameters = _parameters(await _json_body(request))
        config = parameters.get("config")  # read with the model: a bad one is that load's failure
        files = _file_parameters(parameters)
        await self.dataplane.load_model(request.match_info["name"], config, files)
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        parameters = _parameters(await _json_body(request))
        dependents = parameters.get("unload_dependents", False)
        if not isinstance(dependents, bool):
            raise InvalidArgumentError("unload: parameter 'unload_dependents' must be a boolean")
        await self.dataplane.unload_model(request.match_info["name"], dependents)
        return web.Response(status=200)

    async def get_logging(self, request: web.Request) -> web.Response:
        return _json(self.log_settings.as_dict())

    async def update_logging(self, request: web.Request) -> web.Response:
        return _json(self.log_settings.update(await _json_body(request)))


def _write_now(writer: EventWriter, events: GenerateEventEncoder, item: StreamItem) -> bool:
    """The write-through of a generate stream (see ResponseStream.write_through)."""
    if item.response is None or not writer.can_write_now():
        return False
    writer.write_event_now(events.encode(item.response))
    return True


def _target(request: web.Request) -> tuple[str, str]:
    return request.match_info.get("name", ""), request.match_info.get("version", "")


def _json(value: Any) -> web.Response:
    return web.Response(text=json.dumps(value, separators=(",", ":")), content_type="application/json")


async def _json_body(request: web.Request) -> dict:
    raw = await request.read()
    if not raw.strip():
        return {}
    value = loads_bounded(raw)
    if not isinstance(value, dict):
        raise InvalidArgumentError("request body must be a JSON object")
    return value


def _parameters(body: dict) -> dict:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidArgumentError("'parameters' must be a JSON object")
    return parameters


def _file_parameters(parameters: dict) -> dict[str, bytes]:
    files = {}
    for key, value in parameters.items():
        if not key.startswith("file:"):
            continue
        if not isinstance(value, str):
            raise InvalidArgumentError(f"load parameter '{key}' must be a base64 string")
        try:
            files[key[len("file:") :]] = base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidArgumentError(f"load parameter '{key}' is not valid base64") from None
    return files
