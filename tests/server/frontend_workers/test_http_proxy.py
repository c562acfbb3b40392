"""PrimaryProxy: a front app forwards every request to an upstream app on a Unix socket, streams included."""

import asyncio
import gzip
import os
import shutil
import tempfile

import aiohttp
import pytest
from aiohttp import web

from modelgate.server.frontend_workers.http_proxy import PrimaryProxy

GUARD_S = 30  # only against a hang: no test waits on a clock to decide what happened


class Upstream:
    """The primary's side: routes that show what arrived and answer in the ways the proxy must pass on."""

    def __init__(self):
        self.release = asyncio.Event()  # the streams wait on it after their first event
        self.gone = asyncio.Event()  # a stream handler saw its client (the proxy) leave
        self.arrived = asyncio.Event()  # /late has its request
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/echo/{tail:.*}", self.echo)
        self.app.router.add_post("/echo-body", self.echo_body)
        self.app.router.add_get("/binary", self.binary)
        self.app.router.add_get("/gzip", self.gzipped)
        self.app.router.add_get("/error", self.error)
        self.app.router.add_get("/events", self.events)
        self.app.router.add_get("/forever", self.forever)
        self.app.router.add_get("/late", self.late)

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "target": request.raw_path,
                "headers": [[name, value] for name, value in request.headers.items()],
                "body": (await request.read()).decode(),
            }
        )

    async def echo_body(self, request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    async def binary(self, request: web.Request) -> web.Response:
        headers = {"Inference-Header-Content-Length": "7", "X-Multi": "a"}
        response = web.Response(
            body=b'{"a":1}\x00\x01\x02\xff', headers=headers, content_type="application/octet-stream"
        )
        response.headers.add("X-Multi", "b")
        return response

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"x" * 5000), headers={"Content-Encoding": "gzip"})

    async def error(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "Request for unknown model: 'nope' is not found"}, status=400)

    async def events(self, request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        await reply.write(b"data: 1\n\n")
        await self.release.wait()  # set by the client once event 1 reached it
        await reply.write(b"data: 2\n\n")
        await reply.write(b"data: 3\n\n")
        return reply

    async def forever(self, request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        try:
            await reply.write(b"data: first\n\n")
            await self.release.wait()
            while True:  # until the proxy's connection is gone: a write fails or the handler is cancelled
                await reply.write(b"data: more\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            self.gone.set()
            raise

    async def late(self, request: web.Request) -> web.StreamResponse:
        """No headers until released, then as /forever."""
        self.arrived.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.gone.set()
            raise
        return await self.forever(request)


async def serve(app: web.Application, site, handler_cancellation: bool = True, **site_args) -> web.AppRunner:
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    await site(runner, **site_args).start()
    return runner


@pytest.fixture
def socket_dir():
    # Short: a Unix socket path must fit in ~100 bytes, which pytest's tmp_path may not.
    path = tempfile.mkdtemp(prefix="mg-proxy-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=[True, False], ids=["cancelling", "non-cancelling"])
async def proxied(request, socket_dir):
    """(upstream, front URL, client session): the front serves a catch-all route that forwards, with aiohttp's
    handler cancellation on (the server's setting) and off."""
    upstream = Upstream()
    socket_path = os.path.join(socket_dir, "primary.sock")
    upstream_runner = await serve(upstream.app, web.UnixSite, path=socket_path)
    proxy = PrimaryProxy(socket_path)
    front = web.Application()
    front.router.add_route("*", "/{tail:.*}", proxy.forward)
    front_runner = await serve(front, web.TCPSite, request.param, host="127.0.0.1", port=0)
    port = front_runner.addresses[0][1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", auto_decompress=False) as client:
        yield upstream, client
    await proxy.close()
    await front_runner.cleanup()
    await upstream_runner.cleanup()


async def echoed(response: aiohttp.ClientResponse) -> dict:
    found = await response.json()
    found["headers"] = {name.lower(): value for name, value in found["headers"]}
    return found


async def test_method_target_headers_and_body_arrive(proxied):
    _, client = proxied
    headers = {"X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped", "Keep-Alive": "timeout=5"}
    headers["Proxy-Authorization"] = "Basic dropped"
    async with client.put("/echo/a%2Fb/infer?x=1%202&y=+", data=b"payload", headers=headers) as response:
        assert response.status == 200
        found = await echoed(response)
    assert (found["method"], found["target"], found["body"]) == ("PUT", "/echo/a%2Fb/infer?x=1%202&y=+", "payload")
    assert found["headers"]["x-custom"] == "kept"
    assert found["headers"]["content-length"] == "7"
    assert found["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert not {"x-hop", "keep-alive", "proxy-authorization"} & set(found["headers"])
    assert found["headers"]["host"] == "primary"  # the client's Host named the worker
    assert "x-hop" not in found["headers"].get("connection", "").lower()


async def test_nothing_is_added_that_the_client_did_not_send(proxied):
    _, client = proxied
    client_headers = {"Accept-Encoding": "identity", "User-Agent": "test-agent"}
    async with client.get("/echo/x", headers=client_headers, skip_auto_headers=["Accept"]) as response:
        found = await echoed(response)
    assert found["headers"]["accept-encoding"] == "identity"
    assert found["headers"]["user-agent"] == "test-agent"
    assert "accept" not in found["headers"] and "content-type" not in found["headers"]


async def test_an_earlier_x_forwarded_for_is_extended(proxied):
    _, client = proxied
    async with client.get("/echo/x", headers={"X-Forwarded-For": "10.0.0.1"}) as response:
        found = await echoed(response)
    assert found["headers"]["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"


async def test_a_chunked_request_body_is_forwarded(proxied):
    _, client = proxied

    async def parts():
        yield b"one,"
        yield b"two"

    async with client.post("/echo/x", data=parts()) as response:
        found = await echoed(response)
    assert found["body"] == "one,two"
    assert "content-length" not in found["headers"]


async def test_binary_bodies_and_custom_headers_pass_through(proxied):
    _, client = proxied
    async with client.get("/binary") as response:
        body = await response.read()
        assert body == b'{"a":1}\x00\x01\x02\xff'
        assert response.headers["Inference-Header-Content-Length"] == "7"
        assert response.headers.getall("X-Multi") == ["a", "b"]
        assert response.headers["Content-Length"] == str(len(body))


async def test_a_compressed_body_arrives_undecoded(proxied):
    _, client = proxied
    async with client.get("/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await response.read()) == b"x" * 5000


async def test_error_statuses_and_bodies_pass_through(proxied):
    _, client = proxied
    async with client.get("/error") as response:
        assert response.status == 400
        assert await response.json() == {"error": "Request for unknown model: 'nope' is not found"}
    async with client.get("/missing") as response:
        assert response.status == 404


async def test_head_answers_without_a_body(proxied):
    _, client = proxied
    async with client.head("/binary") as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_a_large_body_round_trips_intact(proxied):
    _, client = proxied
    body = os.urandom(8 * 1024 * 1024)
    async with client.post("/echo-body", data=body) as response:
        assert response.status == 200
        assert await response.read() == body


async def test_events_reach_the_client_as_the_upstream_writes_them(proxied):
    upstream, client = proxied

    async def stream() -> list[bytes]:
        async with client.get("/events") as response:
            first = await response.content.readuntil(b"\n\n")
            upstream.release.set()  # the upstream holds events 2 and 3 until the client has seen event 1
            return [first, await response.content.read()]

    assert await asyncio.wait_for(stream(), GUARD_S) == [b"data: 1\n\n", b"data: 2\n\ndata: 3\n\n"]


async def test_a_client_that_leaves_mid_stream_closes_the_upstream_request(proxied):
    upstream, client = proxied
    response = await client.get("/forever")
    assert await response.content.readuntil(b"\n\n") == b"data: first\n\n"
    response.close()  # drops the connection
    upstream.release.set()
    await asyncio.wait_for(upstream.gone.wait(), GUARD_S)


async def test_an_unreachable_primary_gives_503_with_a_json_error(socket_dir):
    missing = os.path.join(socket_dir, "absent.sock")
    proxy = PrimaryProxy(missing)
    front = web.Application()
    front.router.add_route("*", "/{tail:.*}", proxy.forward)
    runner = await serve(front, web.TCPSite, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(
                f"http://127.0.0.1:{runner.addresses[0][1]}/v2/models/x/infer", data=b"{}"
            ) as response:
                assert response.status == 503
                error = (await response.json())["error"]
        assert missing in error and "cannot be reached" in error
    finally:
        await proxy.close()
        await runner.cleanup()


async def test_a_client_that_leaves_before_the_answer_closes_the_upstream_request(proxied):
    upstream, client = proxied
    request = asyncio.ensure_future(client.get("/late"))
    await asyncio.wait_for(upstream.arrived.wait(), GUARD_S)
    request.cancel()  # the client gives up before any header came back
    with pytest.raises(asyncio.CancelledError):
        await request
    upstream.release.set()
    await asyncio.wait_for(upstream.gone.wait(), GUARD_S)
