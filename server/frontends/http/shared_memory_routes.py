"""Triton's shared-memory extension over HTTP: register, status and unregister system and CUDA regions."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import InvalidArgumentError
from modelgate.server.dataplane import Dataplane
from modelgate.server.shared_memory.cuda_region import CudaRegion
from modelgate.server.shared_memory.system_region import SystemRegion

_KINDS = {"systemsharedmemory": SystemRegion, "cudasharedmemory": CudaRegion}


def add_shared_memory_routes(app: web.Application, dataplane: Dataplane) -> None:
    handlers = _SharedMemoryHandlers(dataplane)
    for prefix in _KINDS:
        app.router.add_get(f"/v2/{prefix}/status", handlers.status)
        app.router.add_get(f"/v2/{prefix}/region/{{region}}/status", handlers.status)
        app.router.add_post(f"/v2/{prefix}/unregister", handlers.unregister)
        app.router.add_post(f"/v2/{prefix}/region/{{region}}/unregister", handlers.unregister)
    app.router.add_post("/v2/systemsharedmemory/region/{region}/register", handlers.register_system)
    app.router.add_post("/v2/cudasharedmemory/region/{region}/register", handlers.register_cuda)


class _SharedMemoryHandlers:
    def __init__(self, dataplane: Dataplane):
        self.dataplane = dataplane

    async def status(self, request: web.Request) -> web.Response:
        regions = self.dataplane.shared_memory.status(_kind(request), request.match_info.get("region", ""))
        return web.Response(text=json.dumps(regions), content_type="application/json")

    async def unregister(self, request: web.Request) -> web.Response:
        self.dataplane.shared_memory.unregister(_kind(request), request.match_info.get("region", ""))
        return web.Response(status=200)

    async def register_system(self, request: web.Request) -> web.Response:
        registry = self.dataplane.shared_memory
        body = await _body(request)
        key = _field(body, "key", str)
        registry.register_system(
            request.match_info["region"], key, _field(body, "offset", int, 0), _field(body, "byte_size", int)
        )
        return web.Response(status=200)

    async def register_cuda(self, request: web.Request) -> web.Response:
        registry = self.dataplane.shared_memory
        body = await _body(request)
        handle = _field(body, "raw_handle", dict)
        try:
            raw_handle = base64.b64decode(_field(handle, "b64", str), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgumentError("cuda shared memory register: 'raw_handle.b64' is not valid base64") from None
        await registry.register_cuda(
            request.match_info["region"], raw_handle, _field(body, "device_id", int), _field(body, "byte_size", int)
        )
        return web.Response(status=200)


def _kind(request: web.Request) -> type:
    return _KINDS[request.path.split("/")[2]]


async def _body(request: web.Request) -> dict:
    value = loads_bounded(await request.read(), "shared memory register request")
    if not isinstance(value, dict):
        raise InvalidArgumentError("shared memory register request must be a JSON object")
    return value


_MISSING = object()


def _field(body: dict, key: str, kind: type, default: Any = _MISSING) -> Any:
    if key not in body and default is not _MISSING:
        return default
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        names = {str: "a string", int: "an integer", dict: "an object"}
        raise InvalidArgumentError(f"shared memory register request: '{key}' must be {names[kind]}")
    return value
