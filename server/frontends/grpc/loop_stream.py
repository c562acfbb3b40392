"""Stream-stream RPCs served on the event loop (loop_calls.py), with no handler thread and no reader thread.

On the threaded path a stream holds two threads: a reader that blocks on each request message, and the handler
thread, which takes each response from the loop and blocks until grpc's polling thread reports it sent. Every
response then costs the loop a hand-off and two thread wake-ups: an LLM token streamed over gRPC took 170 µs of
server CPU against 35 µs over HTTP (tiny_llm, 64 streams, 2-core VM; benchmarks/llm_server_cpu_per_token.py).
Here:

- requests: a receive is always pending on the call; its completion tag (on the polling thread) hands the raw
  bytes to the loop and starts the next receive at once, as the reader thread did (no flow control of ours);
- responses: the method's async generator runs as a task on the loop; each response is serialized there and
  its send started there if none is in flight, else queued; core allows one send in flight per call, so the
  send's completion tag, on the polling thread, starts the next queued one itself. The loop is never woken
  for a send, and the polling thread, which wakes for each completion anyway, does the chaining. What the loop
  sends on one connection in one iteration (an engine step's tokens to a client's streams) leaves in one TCP
  write (connection_cork.py);
- the status goes out after the last queued response, by the same chain;
- the method may also write responses through `context.response_writer` (response_writer.py) rather than
  yield them: queued in the call that produces them, in order with what it yields.

The outcomes are those of the threaded path: OK once the method returns; `RpcAbort` (LoopContext.abort, or a
request that `decode` refused, which also cancels the work) with its status; any other exception with UNKNOWN
"Exception iterating responses: ...", logged, as grpcio does; when the RPC ends first (client cancel, deadline,
server stop), the task is cancelled. When more than `MAX_UNSENT` responses wait for a slow client, the method is
paused until half of them are sent, as the threaded path paused it for each one.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from collections.abc import Callable

import grpc

from modelgate.core.errors import drop_traceback
from modelgate.server.frontends.grpc import grpc_internals as internals
from modelgate.server.frontends.grpc.connection_cork import ConnectionCorks
from modelgate.server.frontends.grpc.loop_unary import LoopBehaviour
from modelgate.server.frontends.grpc.threaded_bridge import ENDED_EARLY, LoopContext, RpcAbort

logger = logging.getLogger(__name__)

# Responses queued for a client that reads slower than the method answers, before the method waits.
MAX_UNSENT = 64
_END = object()
_GOES_ON = (None, ())  # a completion tag's result while the RPC goes on: grpc keeps the call
_UNSERIALIZABLE = "Failed to serialize response!"  # grpcio's words
_REFUSED = b"the server could not send a response"


class LoopStreamBehaviour(LoopBehaviour):
    """A stream-stream method's behaviour; `decode` turns each request's bytes into its message on the loop."""

    __slots__ = ("decode",)

    def __init__(self, threaded: Callable, on_loop: Callable, decode: Callable, serializer: Callable, pool):
        super().__init__(threaded, on_loop, serializer, pool)
        self.decode = decode


class _Status:
    """A status waiting behind the responses queued before it."""

    __slots__ = ("code", "details")

    def __init__(self, code: grpc.StatusCode, details: str):
        self.code = code
        self.details = details


class StreamCall:
    """One stream-stream call. The fields under "guarded" are read and written holding the call's condition
    (`state.condition`), on the loop and on grpc's polling thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rpc_event,
        state,
        behaviour: LoopStreamBehaviour,
        corks: ConnectionCorks | None = None,
    ):
        """`corks`: the loop's, where messages sent on one connection in one iteration leave together."""
        self._loop = loop
        self._corks = corks
        self._peer: bytes | None = None  # the call's peer, once `corks` knows of the call
        self._event = rpc_event
        self._state = state
        self._behaviour = behaviour
        self._requests = _Requests(self)
        self._task: asyncio.Task | None = None
        self._request_abort: RpcAbort | None = None  # a refused request, an unserializable write: the RPC ends with it
        # guarded:
        self._unsent: collections.deque = collections.deque()  # serialized responses, then maybe a _Status
        self._is_sending = False  # a send of ours is in flight
        self._drained: asyncio.Future | None = None  # the method waits on it while the queue is full
        self.done = concurrent.futures.Future()  # grpcio counts the call active until it completes

    # -- on grpc's polling thread ------------------------------------------------------------------

    def start(self) -> None:
        """Called by `LoopCalls.submit` (grpc holds the call's condition)."""
        self._state.callbacks.append(self._on_rpc_end)  # run by grpc once the RPC ended, finished or not
        try:
            self._loop.call_soon_threadsafe(self._start_task)
        except RuntimeError:  # the loop is closed (the server is going away): nothing will answer
            internals.abort(self._state, self._event.call, internals.cygrpc_code(grpc.StatusCode.UNAVAILABLE), b"")
            self.done.set_result(None)
            return
        self._receive()

    def _receive(self) -> None:
        self._event.call.start_server_batch((internals.ReceiveMessage(0),), self._on_request)
        self._state.due.add(internals.RECEIVE_MESSAGE_TOKEN)

    def _on_request(self, event):
        """The completion tag of a receive: a message's bytes, or None (the client half-closed, or the RPC ended)."""
        raw = event.batch_operations[0].message()
        state = self._state
        with state.condition:
            state.due.discard(internals.RECEIVE_MESSAGE_TOKEN)
            if raw is None:
                if state.client is internals.CLIENT_OPEN:
                    state.client = internals.CLIENT_CLOSED
            elif internals.is_rpc_state_active(state):
                self._receive()
            try:
                self._loop.call_soon_threadsafe(self._requests.put, _END if raw is None else raw)
            except RuntimeError:  # the loop is closed: the RPC ends when the server stops
                pass
            return internals.finish_if_ended(state)

    def _on_sent(self, event):
        """The completion tag of a send: start the next queued one, if the RPC goes on."""
        state = self._state
        # The condition's lock itself (Condition binds its acquire and release): `with condition` costs two
        # Python calls more, paid for every streamed message here and in `_queue`.
        state.condition.acquire()
        try:
            state.due.discard(internals.SEND_MESSAGE_TOKEN)
            self._is_sending = False
            if state.client is not internals.CLIENT_CANCELLED and not state.statused:  # is_rpc_state_active, inline
                if self._unsent:
                    self._send_next()
                if self._drained is not None and len(self._unsent) <= MAX_UNSENT // 2:
                    self._wake_method()
                return _GOES_ON  # what finish_if_ended returns while the RPC is active, without asking it again
            self._unsent.clear()  # the client is gone, or a status went out: nothing more is sent
            if self._drained is not None:
                self._wake_method()
            return internals.finish_if_ended(state)
        finally:
            state.condition.release()

    def _on_rpc_end(self) -> None:
        if self._task is None or not self._task.done():
            try:
                self._loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:  # the loop is closed: its tasks will never run again
                pass

    # -- on either, holding the condition ---------------------------------------------------------

    def _send_next(self) -> None:
        self._send(self._unsent.popleft())

    def _send(self, item) -> None:
        """Start sending `item` (serialized bytes, or the _Status that ends the call): none is in flight."""
        state = self._state
        if item.__class__ is _Status:
            self._unsent.clear()
            if item.code == grpc.StatusCode.OK:
                internals.status(self._event, state, None)
            else:
                internals.abort(state, self._event.call, internals.cygrpc_code(item.code), item.details.encode())
            return
        flags = internals.NO_COMPRESS if state.disable_next_compression else 0
        operations = (internals.SendMessage(item, flags),)
        if state.initial_metadata_allowed:
            operations = (internals.initial_metadata_operation(state, None), *operations)
            state.initial_metadata_allowed = False
        if error := self._event.call.start_server_batch(operations, self._on_sent):
            self._refused(error)
            return
        state.due.add(internals.SEND_MESSAGE_TOKEN)
        state.disable_next_compression = False
        self._is_sending = True

    def _refused(self, error) -> None:
        """Core refused a send (a grpc_call_error, which grpcio's own paths never check): the response is lost, so
        the RPC ends, INTERNAL, rather than go on with a hole in its responses."""
        logger.error("grpc refused to send a response (call error %s); the RPC ends", error)
        self._unsent.clear()
        internals.abort(self._state, self._event.call, internals.cygrpc_code(grpc.StatusCode.INTERNAL), _REFUSED)

    def _pause_if_full(self) -> None:
        """On the loop: past `MAX_UNSENT` unsent, `_drained` is the future of the client catching up."""
        if len(self._unsent) > MAX_UNSENT and self._drained is None:
            self._drained = self._loop.create_future()

    def _enqueue(self, item) -> None:
        if self._is_sending:
            self._unsent.append(item)
        elif self._unsent:  # not sending with responses queued: only after a status went out, which clears them
            self._unsent.append(item)
            self._send_next()
        else:  # nearly every streamed token: nothing in flight, nothing queued
            self._send(item)

    def _wake_method(self) -> None:
        drained, self._drained = self._drained, None
        self._loop.call_soon_threadsafe(_resolve, drained)

    # -- on the loop -------------------------------------------------------------------------------

    def _start_task(self) -> None:
        if not internals.is_rpc_state_active(self._state):  # ended before the loop came to it
            self._finish()
            return
        if self._corks is not None:
            self._peer = self._event.call.peer()
            self._corks.open(self._peer)
        context = LoopContext(internals.Context(self._event, self._state, None), response_writer=self)
        self._task = self._loop.create_task(self._serve(context))
        self._task.add_done_callback(self._on_done)

    async def _serve(self, context: LoopContext) -> None:
        responses = self._behaviour.on_loop(self._requests, context)
        serialize = self._behaviour.serializer
        try:
            async for response in responses:
                try:
                    serialized = serialize(response)
                except Exception:  # as grpcio: a response that cannot be serialized is the server's fault
                    logger.exception("Exception serializing response!")
                    raise RpcAbort(grpc.StatusCode.INTERNAL, _UNSERIALIZABLE) from None
                if not self._queue(serialized):
                    return  # the RPC ended: `_on_rpc_end` cancels this task
                if (drained := self._drained) is not None:
                    await drained
        finally:
            await responses.aclose()

    def _queue(self, serialized: bytes) -> bool:
        """Queue a response behind those before it; False (nothing queued) once the RPC has ended. Past
        `MAX_UNSENT` unsent, `_drained` is the future of the client catching up."""
        state = self._state
        state.condition.acquire()  # as in `_on_sent`
        try:
            if not internals.is_rpc_state_active(state):
                return False
            if self._peer is not None:
                self._corks.before_send(self._peer)
            self._enqueue(serialized)
            self._pause_if_full()
        finally:
            state.condition.release()
        return True

    # -- the method's response writer (response_writer.py), on the loop ------------------------------

    def write(self, response) -> None:
        """ResponseWriter.write: serialized here; one that cannot be ends the RPC with INTERNAL, as a yielded one."""
        try:
            serialized = self._behaviour.serializer(response)
        except Exception:
            logger.exception("Exception serializing response!")
            self._end_with(RpcAbort(grpc.StatusCode.INTERNAL, _UNSERIALIZABLE))
            return
        self._queue(serialized)

    def write_serialized(self, serialized: bytes) -> None:
        """ResponseWriter.write_serialized."""
        self._queue(serialized)

    def try_write_serialized(self, serialized: bytes) -> bool:
        """ResponseWriter.try_write_serialized: every streamed LLM token of the call. With nothing in flight nor
        queued (nearly every token: one per call per engine step), its send starts here, in this one frame
        rather than through `_enqueue` and `_send` (a Python call each, per token)."""
        # `_drained` is set on the loop only: seen None here, it is None. Seen set just as the polling thread
        # clears it, a response is refused that could have gone: its caller sends it the slower way.
        if self._drained is not None:
            return False
        state = self._state
        if state.initial_metadata_allowed or state.disable_next_compression:
            return self._queue(serialized)
        state.condition.acquire()  # as in `_on_sent`
        try:
            if state.client is internals.CLIENT_CANCELLED or state.statused:  # not is_rpc_state_active
                return False
            if self._peer is not None:
                self._corks.before_send(self._peer)
            # Asked holding the condition, never before taking it: `_on_sent` (the polling thread) takes the next
            # queued response out of `_unsent` before its send starts, and a send started here in between was
            # refused by core (one send in flight per call), its token lost.
            if self._is_sending or self._unsent:
                self._enqueue(serialized)
                self._pause_if_full()
                return True
            if error := self._event.call.start_server_batch((internals.SendMessage(serialized, 0),), self._on_sent):
                self._refused(error)
                return True
            state.due.add(internals.SEND_MESSAGE_TOKEN)
            self._is_sending = True
        finally:
            state.condition.release()
        return True

    def drained(self) -> asyncio.Future | None:
        """ResponseWriter.drained."""
        return self._drained

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def refuse_request(self, abort: RpcAbort) -> None:
        """A request that `decode` refused: the RPC ends with its status, and the method is cancelled."""
        self._end_with(abort)

    def _end_with(self, abort: RpcAbort) -> None:
        self._request_abort = abort
        self._cancel()

    def _on_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            abort = self._request_abort
            if abort is None:
                self._end(_Status(grpc.StatusCode.CANCELLED, ENDED_EARLY))
            else:
                self._end(_Status(abort.code, abort.details))
        elif (error := task.exception()) is not None:
            self._end(self._error_status(error))
            drop_traceback(error)  # its frames hold requests: freed now, not at the next full collection
        else:
            self._end(_Status(grpc.StatusCode.OK, ""))
        self._finish()

    @staticmethod
    def _error_status(error: BaseException) -> _Status:
        if isinstance(error, RpcAbort):
            return _Status(error.code, error.details)
        details = f"Exception iterating responses: {error}"  # grpcio's words for a stream method's exception
        logger.error(details, exc_info=error)
        return _Status(grpc.StatusCode.UNKNOWN, details)

    def _end(self, status: _Status) -> None:
        """Queue the status behind the responses before it (grpc sends nothing to a call that ended)."""
        with self._state.condition:
            if not self._state.statused:
                self._enqueue(status)

    def _finish(self) -> None:
        if self._peer is not None:
            self._corks.close(self._peer)
            self._peer = None
        self._task = None
        self._requests.close()
        if not self.done.done():
            self.done.set_result(None)


class _Requests:
    """The method's `requests`: the raw messages from the polling thread, decoded on the loop as it reads."""

    def __init__(self, call: StreamCall):
        self._call = call
        self._queue: asyncio.Queue = asyncio.Queue()  # binds to the loop on first use, there

    def put(self, raw) -> None:
        if self._queue is not None:
            self._queue.put_nowait(raw)

    def close(self) -> None:
        self._queue = None  # the raw messages not read go with it

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._queue is None:
            raise StopAsyncIteration
        raw = await self._queue.get()
        if raw is _END:
            self._queue.put_nowait(_END)  # a reader that asks again hears the end again
            raise StopAsyncIteration
        try:
            return self._call._behaviour.decode(raw)
        except RpcAbort as abort:
            self._call.refuse_request(drop_traceback(abort))
            raise asyncio.CancelledError from None


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
