"""A probe service for tests of how grpc calls reach the event loop (threaded_bridge.py, loop_calls.py): its
methods take and return bytes and record, on the loop, what happened to them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator

import grpc

from tests.server.frontends.grpc.grpc_helpers import WAIT_S

SERVICE = "probe.Probe"


@contextlib.contextmanager
def loop_on_a_thread() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """An event loop running on a thread of its own ("probe-loop"), stopped and closed on exit."""
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="probe-loop", daemon=True)
    loop_thread.start()
    try:
        yield loop, loop_thread
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(WAIT_S)
        loop.close()


@contextlib.contextmanager
def probe_server(handlers: dict, handler_threads: int) -> Iterator[tuple[grpc.Server, grpc.Channel]]:
    """A grpc server of SERVICE's `handlers` (method name -> handler) on a local port, with `handler_threads`
    handler threads ("probe-handler"), and a channel to it; both closed on exit."""
    pool = concurrent.futures.ThreadPoolExecutor(handler_threads, thread_name_prefix="probe-handler")
    server = grpc.server(pool)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, channel
    finally:
        channel.close()
        server.stop(None).wait(WAIT_S)


class UnaryProbe:
    """Each method records what happened to it in `seen` (name -> threading.Event), and its thread in `threads`."""

    def __init__(self):
        self.seen: dict[str, threading.Event] = {}
        self.threads: set[threading.Thread] = set()

    def mark(self, what: str) -> None:
        self.threads.add(threading.current_thread())
        self.seen.setdefault(what, threading.Event()).set()

    def wait_for(self, what: str) -> bool:
        return self.seen.setdefault(what, threading.Event()).wait(WAIT_S)

    async def Echo(self, request: bytes, context) -> bytes:
        self.mark("echo")
        await asyncio.sleep(0)  # a real suspension: the answer comes from a later step of the task
        return request

    async def Abort(self, request: bytes, context) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused {request.decode()}")
        raise AssertionError("abort returned")

    async def Hang(self, request: bytes, context) -> bytes:
        self.mark(f"hang-started-{request.decode()}")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.mark(f"hang-cancelled-{request.decode()}")
            raise
        return b""


def unary(channel, name: str):
    return channel.unary_unary(f"/{SERVICE}/{name}")


class StreamProbe(UnaryProbe):
    """UnaryProbe plus stream-stream methods (async generators taking an async iterator of requests)."""

    async def Count(self, requests, context):
        """Reads every request (each a count) before answering: the client has half-closed by then."""
        total = sum([int(request) async for request in requests])
        self.mark("count-read-all")
        for index in range(total):
            await asyncio.sleep(0.005)
            yield str(index).encode()

    async def EchoThenHang(self, requests, context):
        try:
            async for request in requests:
                self.mark("echo-stream")
                yield request
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.mark("stream-cancelled")
            raise

    async def FailAfterOne(self, requests, context):
        async for request in requests:
            yield request
            raise RuntimeError("the probe fails")

    async def AbortAfterOne(self, requests, context):
        async for request in requests:
            yield request
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")


STREAMS = ("Count", "EchoThenHang", "FailAfterOne", "AbortAfterOne")


def stream(channel, name: str):
    return channel.stream_stream(f"/{SERVICE}/{name}")


def requests_then_wait(held_open: threading.Event, *requests: bytes) -> Iterator[bytes]:
    """Send `requests`, then keep the request side open (no half-close) until `held_open` is set."""
    yield from requests
    held_open.wait(WAIT_S)


# Checks of the stream contract that both ways of serving a stream (threaded_bridge.py, loop_calls.py) must keep.


def assert_half_closed_count_gets_every_response(channel) -> None:
    call = stream(channel, "Count")(iter([b"3", b"17"]), timeout=WAIT_S)  # half-closes after two requests
    assert [int(response) for response in call] == list(range(20))
    assert call.code() == grpc.StatusCode.OK


def assert_client_cancel_cancels_the_method(servicer: StreamProbe, channel, held_open: threading.Event, *requests):
    """EchoThenHang answers `requests` on a stream the client keeps open until `held_open` is set (the caller sets
    it), then the client cancels: the method is cancelled."""
    call = stream(channel, "EchoThenHang")(requests_then_wait(held_open, *requests), timeout=WAIT_S)
    assert [next(call) for _ in requests] == list(requests)
    call.cancel()
    assert servicer.wait_for("stream-cancelled")


def error_after_the_first_response(channel, method: str, held_open: threading.Event, first: bytes, second: bytes):
    """Open `method` with two requests (the stream kept open until the caller sets `held_open`), read the answer
    to the first, and return the grpc.RpcError that ends the stream next."""
    call = stream(channel, method)(requests_then_wait(held_open, first, second), timeout=WAIT_S)
    assert next(call) == first
    try:
        next(call)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{method}: the stream went on after its first response")


def assert_server_stop_cancels_an_open_stream(servicer: StreamProbe, channel, server, held_open: threading.Event):
    """The stream is kept open until the caller sets `held_open`."""
    call = stream(channel, "EchoThenHang")(requests_then_wait(held_open, b"x"), timeout=WAIT_S)
    assert next(call) == b"x"
    assert server.stop(grace=0.2).wait(WAIT_S), "the server did not stop"
    assert servicer.wait_for("stream-cancelled")
    try:
        next(call)
    except grpc.RpcError:
        return
    raise AssertionError("the stream went on after the server stopped")


def assert_an_awaited_abort_ends_the_stream_with_its_status(channel, also=lambda: None) -> None:
    """AbortAfterOne: the client gets the first response, then the abort's own status and details; `also`
    (further checks) runs while the client still holds its request stream open."""
    held_open = threading.Event()
    error = error_after_the_first_response(channel, "AbortAfterOne", held_open, b"first", b"second")
    assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")
    also()
    held_open.set()
