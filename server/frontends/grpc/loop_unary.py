"""Unary RPCs served on the event loop (loop_calls.py), with no handler thread.

- on grpc's polling thread (in `LoopCalls.submit`), the call asks core for the request message, with a
  completion tag of its own;
- when the message arrives (the polling thread runs the tag), the raw bytes go to the loop in one
  `call_soon_threadsafe`;
- on the loop, the async handler (decoding included) runs as a task; its response is serialized and the
  status sent from the loop (grpc's `_status`: a non-blocking batch start); core completes it on the polling
  thread as for any other call.

The outcomes are those of the threaded path: a response with OK; `RpcAbort` (LoopContext.abort) with its
status; a cancelled task (the RPC ended first) with CANCELLED, which the client never sees; any other
exception with UNKNOWN "Exception calling application: ...", logged, as grpcio does. When the RPC ends early,
the task is cancelled (grpc runs the call's callbacks on its polling thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

import grpc

from modelgate.core.errors import drop_traceback
from modelgate.server.frontends.grpc import grpc_internals as internals
from modelgate.server.frontends.grpc.threaded_bridge import ENDED_EARLY, LoopContext, RpcAbort

logger = logging.getLogger(__name__)


class LoopBehaviour:
    """What grpcio calls `behavior`: the threaded handler (what grpcio calls, where LoopCalls hands a call back
    to a handler thread), plus the async one that `LoopCalls` runs on the loop and the response serializer."""

    __slots__ = ("threaded", "on_loop", "serializer", "experimental_thread_pool")

    def __init__(self, threaded: Callable, on_loop: Callable, serializer: Callable, pool):
        self.threaded = threaded
        self.on_loop = on_loop
        self.serializer = serializer
        self.experimental_thread_pool = pool  # grpcio's name: the executor its calls are submitted to

    def __call__(self, request_or_iterator, context):
        return self.threaded(request_or_iterator, context)


class LoopUnaryBehaviour(LoopBehaviour):
    """A unary method's behaviour."""

    __slots__ = ()


class UnaryCall:
    """One unary call: its request from grpc's polling thread to the loop, its status sent from the loop."""

    __slots__ = ("_loop", "_event", "_state", "_behaviour", "_task", "_is_finished", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop, rpc_event, state, behaviour: LoopUnaryBehaviour):
        self._loop = loop
        self._event = rpc_event
        self._state = state
        self._behaviour = behaviour
        self._task: asyncio.Task | None = None
        self._is_finished = False  # set on the loop once the status is sent
        self.done = concurrent.futures.Future()  # grpcio counts the call active until it completes

    # -- on grpc's polling thread ------------------------------------------------------------------

    def receive_request(self) -> None:
        """Called by `LoopCalls.submit` (grpc holds the call's condition): ask core for the one request message."""
        state = self._state
        self._event.call.start_server_batch((internals.ReceiveMessage(0),), self._on_request)
        state.due.add(internals.RECEIVE_MESSAGE_TOKEN)
        state.callbacks.append(self._on_rpc_end)  # run by grpc once the RPC ended, finished or not

    def _on_request(self, event):
        """The completion tag of the receive: the message's bytes, or None (no message, or cancelled)."""
        raw = event.batch_operations[0].message()
        with self._state.condition:
            if raw is None and self._state.client is internals.CLIENT_OPEN:
                self._state.client = internals.CLIENT_CLOSED
            try:
                self._loop.call_soon_threadsafe(self._start, raw)
            except RuntimeError:  # the loop is closed (the server is going away): nothing will answer
                code = internals.cygrpc_code(grpc.StatusCode.UNAVAILABLE)
                internals.abort(self._state, self._event.call, code, b"shutting down")
                self._finish()
            return internals.possibly_finish_call(self._state, internals.RECEIVE_MESSAGE_TOKEN)

    def _on_rpc_end(self) -> None:
        if not self._is_finished:
            try:
                self._loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:  # the loop is closed: its tasks will never run again
                pass

    # -- on the loop -------------------------------------------------------------------------------

    def _start(self, raw: bytes | None) -> None:
        if raw is None:  # as grpcio's unary_request: a closed stream without a message is the client's error
            if self._state.client is internals.CLIENT_CLOSED:
                method = self._event.call_details.method.decode()
                self._end_with(grpc.StatusCode.UNIMPLEMENTED, f'"{method}" requires exactly one request message.')
            self._finish()
            return
        if self._is_finished:  # cancelled before the message came
            return
        context = LoopContext(internals.Context(self._event, self._state, None))
        self._task = self._loop.create_task(self._behaviour.on_loop(raw, context))
        self._task.add_done_callback(self._on_done)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        elif not self._is_finished:
            self._end_with(grpc.StatusCode.CANCELLED, ENDED_EARLY)
            self._finish()

    def _on_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self._end_with(grpc.StatusCode.CANCELLED, ENDED_EARLY)
        elif (error := task.exception()) is not None:
            self._end_with_error(error)
        else:
            self._respond(task.result())
        self._finish()

    def _respond(self, response) -> None:
        try:
            serialized = self._behaviour.serializer(response)
        except Exception:  # as grpcio: a response that cannot be serialized is the server's fault
            logger.exception("Exception serializing response!")
            self._end_with(grpc.StatusCode.INTERNAL, "Failed to serialize response!")
            return
        internals.status(self._event, self._state, serialized)

    def _end_with_error(self, error: BaseException) -> None:
        if isinstance(error, RpcAbort):
            self._end_with(error.code, error.details)
        else:  # as grpcio answers a handler's exception, logged with its traceback
            details = f"Exception calling application: {error}"
            logger.error(details, exc_info=error)
            self._end_with(grpc.StatusCode.UNKNOWN, details)
        # Its frames hold the request: freed now, not at the next full collection (the task keeps the error).
        drop_traceback(error)

    def _end_with(self, code: grpc.StatusCode, details: str) -> None:
        """The call's status (unless it ended already: grpc sends nothing to a cancelled call)."""
        if code == grpc.StatusCode.OK:  # as grpcio's abort: OK is no way to fail an RPC
            details = ""
        with self._state.condition:
            internals.abort(self._state, self._event.call, internals.cygrpc_code(code), details.encode())

    def _finish(self) -> None:
        self._is_finished = True
        self._task = None
        if not self.done.done():
            self.done.set_result(None)
