"""Calls of grpcio's threaded server served on the event loop, with no handler thread.

grpcio's threaded server hands each call to a pool thread, which blocks on the call's Condition for every
message it receives or sends (`_unary_response_in_pool`, `_stream_response_in_pool`), while our work is on
the event loop: two thread wake-ups and a stack of Python per message for a thread that only waits. grpcio
lets a handler name its own executor (`experimental_thread_pool`); `LoopCalls` is that executor, and its
`submit` takes grpcio's work item apart instead of running it: the loop starts the call's operations itself
(non-blocking batches), and grpc's polling thread runs their completion tags, as for any call. How each kind
of call goes: loop_unary.py (unary-unary), loop_stream.py (stream-stream).

This uses grpcio's private server internals (grpc_internals.py): without them, and for any work item that
`submit` does not recognise (a handler not made here, a restricted method's guard), calls run on the
fallback executor exactly as before (the threaded handlers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Awaitable, Callable

from modelgate.server.frontends.grpc import grpc_internals
from modelgate.server.frontends.grpc.connection_cork import ConnectionCorks
from modelgate.server.frontends.grpc.loop_stream import LoopStreamBehaviour, StreamCall
from modelgate.server.frontends.grpc.loop_unary import LoopUnaryBehaviour, UnaryCall
from modelgate.server.frontends.grpc.threaded_bridge import LoopContext

SUPPORTED = grpc_internals.SUPPORTED

UnaryOnLoop = Callable[[bytes, LoopContext], Awaitable]
StreamOnLoop = Callable[[AsyncIterator, LoopContext], AsyncIterator]


class LoopCalls(concurrent.futures.ThreadPoolExecutor):
    """The executor of the handlers made by `unary_handler` and `stream_handler`: their calls run on `loop`.

    A ThreadPoolExecutor only because grpcio accepts nothing else as a handler's executor; it starts no
    thread of its own. Work items it does not recognise go to `fallback`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fallback: concurrent.futures.Executor):
        super().__init__(max_workers=1)
        self._loop = loop
        self._fallback = fallback
        self._corks = ConnectionCorks(loop)  # streams' messages on one connection leave together (connection_cork.py)

    def unary_handler(self, threaded: Callable, on_loop: UnaryOnLoop, serializer: Callable) -> Callable:
        """A unary behaviour for `grpc.unary_unary_rpc_method_handler(..., request_deserializer=None)`:
        `on_loop(raw request bytes, context)` on the loop, its response serialized with `serializer`;
        `threaded` (the same work as a blocking handler) wherever this executor is not used."""
        return LoopUnaryBehaviour(threaded, on_loop, serializer, self)

    def stream_handler(
        self, threaded: Callable, on_loop: StreamOnLoop, decode: Callable[[bytes], object], serializer: Callable
    ) -> Callable:
        """A stream-stream behaviour for `grpc.stream_stream_rpc_method_handler(..., request_deserializer=None)`:
        the async generator `on_loop(requests, context)` on the loop, where `requests` is an async iterator of
        the raw messages passed through `decode` (which may raise RpcAbort: the RPC ends with its status);
        each response serialized with `serializer`. `threaded` wherever this executor is not used."""
        return LoopStreamBehaviour(threaded, on_loop, decode, serializer, self)

    def submit(self, fn, /, *args, **kwargs):
        # grpcio submits (rpc state's context.run, work, rpc_event, state, behaviour, request thunk,
        # request deserializer, response serializer) on its polling thread, holding the call's condition.
        if len(args) == 7 and not kwargs:
            work, rpc_event, state, behaviour = args[:4]
            if work is grpc_internals.UNARY_WORK and isinstance(behaviour, LoopUnaryBehaviour):
                call = UnaryCall(self._loop, rpc_event, state, behaviour)
                call.receive_request()
                return call.done
            if work is grpc_internals.STREAM_WORK and isinstance(behaviour, LoopStreamBehaviour):
                call = StreamCall(self._loop, rpc_event, state, behaviour, self._corks)
                call.start()
                return call.done
        return self._fallback.submit(fn, *args, **kwargs)
