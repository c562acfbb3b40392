"""Forward an HTTP request from a frontend worker to the primary, which serves its HTTP app on a Unix socket too.

A worker answers LLM streams itself and passes everything else on unchanged: same method, target, headers
(less the hop-by-hop ones, which describe the client's connection, not the request) and body, both ways,
streamed. Bodies pass byte for byte: a compressed answer stays compressed and a server-sent event reaches the
client as soon as the primary writes it.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = ["PrimaryProxy"]

# RFC 9110 7.6.1 and 9112's Transfer-Encoding/TE/Trailer: they end at each hop. Host names the worker (the
# client's connection), Expect was answered by the worker's own server already.
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"))  # and Proxy-*
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "expect"}
# aiohttp's client adds these when absent; here absent means what the client meant (no Accept-Encoding: no
# compressed answer), so they are never added.
_NO_DEFAULTS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
CONNECT_TIMEOUT_S = 10.0  # a Unix socket connects at once unless the primary is stuck; streams have no limit


class PrimaryProxy:
    """Forwards requests to the primary over one pooled client session, opened on first use."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self._client: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request, body: bytes | None = None) -> web.StreamResponse:
        """The primary's answer to `request`, streamed back as it arrives; 503 with `{"error"}` when the primary
        cannot be reached. A client that leaves (the handler is cancelled, or a write fails) closes the
        upstream request, so the primary stops working for it. `body`: the request's body when the caller has
        read it already (then it is sent whole), else the body is streamed from the client."""
        if body is None and request.body_exists:
            body = request.content
        try:
            upstream = await self._session().request(
                request.method,
                _target(request.rel_url),
                headers=_request_headers(request),
                data=body,
                allow_redirects=False,
            )
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            message = f"the primary server at {self.socket_path} cannot be reached: {type(exc).__name__}: {exc}"
            return web.json_response({"error": message}, status=503)
        try:
            return await _relay(request, upstream)
        except BaseException:  # cancelled (the client left): the primary's connection must not be reused
            upstream.close()
            raise
        finally:
            upstream.release()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket_path, limit=0),  # as many as clients send
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                auto_decompress=False,
                skip_auto_headers=_NO_DEFAULTS,
            )
        return self._client


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Status, headers, then each chunk as it comes."""
    reply = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=_response_headers(upstream))
    try:
        await reply.prepare(request)
        async for chunk in upstream.content.iter_any():
            await reply.write(chunk)
    except (aiohttp.ClientError, ConnectionError):
        # The primary or the client went away mid-body. No status can say so any more: cutting the client's
        # connection keeps the body from ending as if complete (a last empty chunk would say it was).
        upstream.close()
        if request.transport is not None:
            request.transport.close()
    return reply


def _target(rel_url: URL) -> URL:
    """The same path and query, kept encoded (a `%2F` inside a model name must stay one)."""
    return URL.build(
        scheme="http", host="primary", path=rel_url.raw_path, query_string=rel_url.raw_query_string, encoded=True
    )


def _request_headers(request: web.Request) -> CIMultiDict:
    dropped = _NOT_FORWARDED
    if "Content-Encoding" in request.headers:
        # aiohttp's server decodes a gzip/deflate body as it reads it: what goes on is the decoded body, of
        # another length.
        dropped = dropped | {"content-encoding", "content-length"}
    headers = _without_hop_by_hop(request.headers, dropped)
    if request.remote:
        previous = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{previous}, {request.remote}" if previous else request.remote
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict:
    # Content-Length stays: the body passes unchanged, so the length is still true, and the client sees the
    # framing the primary chose (aiohttp writes a body of known length without chunks).
    return _without_hop_by_hop(upstream.headers, _HOP_BY_HOP)


def _without_hop_by_hop(headers: CIMultiDictProxy, dropped: frozenset[str]) -> CIMultiDict:
    """`headers` less `dropped`, `Proxy-*` and the names the Connection header lists (hop-by-hop by its say)."""
    listed = {name.strip().lower() for value in headers.getall("Connection", ()) for name in value.split(",")}
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in dropped and name.lower() not in listed and not name.lower().startswith("proxy-")
    )
