"""Async servicer methods served by grpcio's threaded server, their work still on the event loop.

grpc.aio runs each unary call through a deep stack of Cython and asyncio machinery on the loop; grpcio's
threaded server does the transport (HTTP/2, protobuf (de)serialization) on its own threads, and the loop
only runs the servicer's coroutine. `ThreadedServicer` wraps an async servicer (the one grpc.aio would
serve) so that the generated `add_*Servicer_to_server` registers sync handlers for the threaded server:

- a coroutine method (unary-unary) runs as a task on the loop (`_LoopCall`); the handler thread waits for
  its result;
- an async-generator method (stream-stream: it takes an async iterator of requests) runs on the loop too,
  fed by a reader thread that drains the blocking request iterator into the loop, and its responses go
  through a thread-safe queue to the generator the handler thread returns (`_StreamBridge`);
- any other attribute (a sync method, e.g. the generated UNIMPLEMENTED default) is served as it is.
  Unary-stream and stream-unary methods are not bridged: the services served here have none.

Invariants, as grpc.aio keeps them: `await context.abort(code, details)` ends the method and the RPC
with that status; when the RPC ends early (client cancel, deadline, server stop), the coroutine's task on
the loop is cancelled; responses of a stream go out in the order the method yields them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import queue
from collections.abc import Callable, Iterator

import grpc

from modelgate.core.errors import drop_traceback

# The status of an RPC whose work was cancelled because it ended first. The client never sees it: a
# cancelled RPC has its status already (CANCELLED, DEADLINE_EXCEEDED), and an abort after that is silent.
# The status of an RPC whose work was cancelled because it ended first (never seen by the client).
ENDED_EARLY = "the RPC ended before its handler did"
_END = object()


class RpcAbort(Exception):
    """Raised on the loop by `LoopContext.abort`, or by a stream's request iterator on a reader thread (a
    request that cannot be decoded); the handler thread turns it into `context.abort`."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(code, details)
        self.code = code
        self.details = details


class LoopContext:
    """What an async method sees as its `context`: grpc.aio's interface over the threaded server's context.

    `abort` must be awaited, as in grpc.aio; every other attribute (invocation_metadata, peer,
    set_trailing_metadata, time_remaining, ...) is the threaded context's, whose methods are thread-safe.
    `response_writer`: where a stream method served on the loop may write its responses rather than yield
    them (response_writer.py); None on the threaded path.
    """

    __slots__ = ("_context", "response_writer")

    def __init__(self, context: grpc.ServicerContext, response_writer=None):
        self._context = context
        self.response_writer = response_writer

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise RpcAbort(code, details)

    def cancelled(self) -> bool:
        return not self._context.is_active()

    def __getattr__(self, name: str):
        return getattr(self._context, name)


class ThreadedServicer:
    """`servicer`'s methods as sync handlers for `grpc.server(...)`, each running its coroutine on `loop`.

    Pass it where the generated `add_*Servicer_to_server(servicer, server)` wants the servicer.
    `reader_pool` runs one request reader per open stream for the stream's lifetime.
    """

    def __init__(self, servicer, loop: asyncio.AbstractEventLoop, reader_pool: concurrent.futures.Executor):
        self._servicer = servicer
        self._loop = loop
        self._reader_pool = reader_pool

    def __getattr__(self, name: str):
        method = getattr(self._servicer, name)
        if inspect.isasyncgenfunction(method):
            return self._stream_handler(method)
        if inspect.iscoroutinefunction(method):
            return self._unary_handler(method)
        return method

    def coroutine_method(self, name: str) -> Callable | None:
        """The servicer's method `name` if it is a coroutine function (a unary RPC), else None: for handlers
        that run it on the loop themselves (loop_calls.py)."""
        method = getattr(self._servicer, name)
        return method if inspect.iscoroutinefunction(method) else None

    def async_generator_method(self, name: str) -> Callable | None:
        """The servicer's method `name` if it is an async generator function (a stream-stream RPC), else None:
        for handlers that run it on the loop themselves (loop_calls.py)."""
        method = getattr(self._servicer, name)
        return method if inspect.isasyncgenfunction(method) else None

    def _unary_handler(self, method: Callable):
        loop = self._loop

        def handle(request, context: grpc.ServicerContext):
            call = _LoopCall(loop, method(request, LoopContext(context)))
            _cancel_when_rpc_ends(call, context)
            return _result(call, context)

        return handle

    def _stream_handler(self, method: Callable):
        def handle(request_iterator: Iterator, context: grpc.ServicerContext) -> Iterator:
            bridge = _StreamBridge(self._loop)
            future = asyncio.run_coroutine_threadsafe(bridge.pump(method(bridge, LoopContext(context))), self._loop)
            # After every response the method put: the future completes on the loop once the method returns.
            future.add_done_callback(bridge.end_responses)
            _cancel_when_rpc_ends(future, context)
            self._reader_pool.submit(bridge.read_requests, request_iterator, future)
            return bridge.responses(future, context)

        return handle


class _LoopCall:
    """A coroutine run as a task on the loop for one waiting thread, which gets its outcome through a
    SimpleQueue: a wait in C, where a concurrent Future's `result()` goes through a threading.Condition
    (Python code, a lock made per wait) on both sides of every call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coroutine):
        self._loop = loop
        self._outcome: queue.SimpleQueue = queue.SimpleQueue()
        self._task: asyncio.Task | None = None
        self._is_cancelled = False  # on the loop
        self._is_done = False  # set on the loop, read by the thread that may cancel
        loop.call_soon_threadsafe(self._start, coroutine)

    def result(self):
        """The coroutine's result (blocking); raises what it raised, or CancelledError."""
        value, error = self._outcome.get()
        if error is not None:
            raise error
        return value

    def cancel(self) -> bool:
        """From any thread: cancel the task unless it finished (then nothing reaches the loop)."""
        if not self._is_done:
            self._loop.call_soon_threadsafe(self._cancel_on_loop)
        return True

    def _start(self, coroutine) -> None:
        if self._is_cancelled:
            coroutine.close()
            self._finish(None, concurrent.futures.CancelledError())
            return
        self._task = self._loop.create_task(coroutine)
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self._finish(None, concurrent.futures.CancelledError())
        elif task.exception() is not None:
            self._finish(None, task.exception())
        else:
            self._finish(task.result(), None)

    def _finish(self, value, error: BaseException | None) -> None:
        self._is_done = True
        self._outcome.put((value, error))

    def _cancel_on_loop(self) -> None:
        self._is_cancelled = True
        if self._task is not None:
            self._task.cancel()


class _StreamBridge:
    """One stream-stream call: requests from a reader thread into the loop, responses from the loop out.

    The method iterates the bridge itself (`async for request in bridge`). Per response, the loop does
    one `SimpleQueue.put` and the handler thread one blocking `get`: no polling, no timeouts.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._requests: asyncio.Queue = asyncio.Queue()  # binds to the loop on first use, there
        self._responses: queue.SimpleQueue = queue.SimpleQueue()
        self._request_abort: RpcAbort | None = None  # set by the reader thread before it cancels the work

    # -- requests: reader thread -> loop ------------------------------------------------------------

    def read_requests(self, request_iterator: Iterator, future: concurrent.futures.Future) -> None:
        """On a reader thread until the client half-closes (then the method's iterator ends) or the RPC ends."""
        put = self._requests.put_nowait
        try:
            for request in request_iterator:
                self._loop.call_soon_threadsafe(put, request)
        except RpcAbort as abort:  # the iterator refused a request: the RPC ends with its status
            self._request_abort = drop_traceback(abort)  # kept: its frames (this one: `self`) would make a cycle
            future.cancel()
            return
        except Exception as exc:  # grpc.RpcError: cancelled, deadline, server stop; the work is cancelled with it
            # grpc keeps the RpcError in the RPC's state, which the request iterator in its traceback refers to:
            # a cycle holding this frame's last request and the raw bytes it was decoded from until a full
            # garbage collection (a 10 MB message held 20 MB after the stream ended).
            drop_traceback(exc)
            future.cancel()
            return
        self._loop.call_soon_threadsafe(put, _END)

    def __aiter__(self):
        return self

    async def __anext__(self):
        request = await self._requests.get()
        if request is _END:
            raise StopAsyncIteration
        return request

    # -- responses: loop -> handler thread ----------------------------------------------------------

    async def pump(self, responses) -> None:
        put = self._responses.put
        async for response in responses:
            put(response)

    def end_responses(self, _future=None) -> None:
        self._responses.put(_END)

    def responses(self, future: concurrent.futures.Future, context: grpc.ServicerContext) -> Iterator:
        """What the handler thread sends: every response until the method ends, then its outcome."""
        get = self._responses.get
        try:
            while (response := get()) is not _END:
                yield response
            if self._request_abort is not None:
                context.abort(self._request_abort.code, self._request_abort.details)
            _result(future, context)
        finally:
            # The RPC stopped taking responses (grpc drops this generator): stop the work too.
            future.cancel()


def _cancel_when_rpc_ends(future: concurrent.futures.Future | _LoopCall, context: grpc.ServicerContext) -> None:
    """Cancel the coroutine's task on the loop when the RPC terminates first (grpc.aio cancels its handler)."""
    # The callback runs on grpc's thread when the RPC terminates, finished or not: cancelling a future
    # already done does nothing. A concurrent future's cancel() takes effect at once and asks the loop
    # to cancel the task (asyncio chains the two futures).
    if not context.add_callback(future.cancel):
        future.cancel()  # terminated already


def _result(future: concurrent.futures.Future | _LoopCall, context: grpc.ServicerContext):
    """The coroutine's result on the handler thread; its abort, cancellation or error ends the RPC."""
    try:
        return future.result()
    except RpcAbort as abort:
        context.abort(abort.code, abort.details)
    except concurrent.futures.CancelledError:
        context.abort(grpc.StatusCode.CANCELLED, ENDED_EARLY)
