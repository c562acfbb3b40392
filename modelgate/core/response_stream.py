"""The responses of one request on their way from a model (any thread) to a frontend (the loop).

A decoupled model sends 0..n responses and then a final flag, possibly from threads of
its own and after `execute` returned. `ResponseStream.send` is safe to call from any
thread; the frontend iterates the stream on the event loop until the final item.
Cancelling the stream (client gone, stream cancelled) is visible to the model through
`is_cancelled`; items sent after cancellation are dropped.

A frontend that can write an item without awaiting (a server-sent event into a socket buffer) offers
to through `write_through`: items then reach the client in the call that delivers them, with no wake-up
of the frontend's task per item, which matters for LLM streams (one item per token of every stream).
A frontend whose events are made from a response's `values` alone offers a values writer too
(`write_values_through`), and a model that sends such responses from the loop offers them to it first
(`try_write_values`): a streamed token then costs no InferResponse, StreamItem, lock or queue check of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from modelgate.core.inference_types import InferResponse
from modelgate.core.sink_state import SinkState

logger = logging.getLogger(__name__)

# The running loop of this thread, or None (a model's thread): asyncio's own lookup without get_running_loop's
# exception. It asks the kernel for the process id each time (0.33 µs on the 2-core VM of session 21), so a
# stream made on its loop remembers the loop's thread and compares thread ids instead.
_get_running_loop = asyncio.events._get_running_loop
get_ident = threading.get_ident


@dataclass(slots=True)
class StreamItem:
    """One step of a stream: a response (or None for a bare final flag) and whether it is the last."""

    response: InferResponse | None
    is_final: bool


class ResponseStream(SinkState):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._loop = loop
        self._loop_thread = threading.get_ident() if _get_running_loop() is loop else None  # None: unknown
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._is_drained = False  # the final item was handed to the frontend
        self._finish_callbacks: list[Callable[[], None]] | None = []  # None once finished
        self._write_through: Callable[[StreamItem], bool] | None = None
        self._write_values: Callable[[dict], bool] | None = None
        # The iterator awaits the next item with nothing queued (nothing taken is still being handled): an
        # item sent now is the next the client gets. Cleared by the first item queued, so that later ones
        # queue behind it without asking the queue.
        self._is_waiting = False

    def write_through(self, write: Callable[[StreamItem], bool]) -> None:
        """On the loop: offer each item delivered from now on, but the final one, to `write` (called on the
        loop), which returns whether it took the item; an item not taken waits for the iterator as before.
        Items are offered only while the iterator waits with nothing queued, so they reach the client in the
        order sent; the final item always goes to the iterator, which ends with it."""
        self._write_through = write

    def write_values_through(self, write: Callable[[dict], bool]) -> None:
        """On the loop: as `write_through`, for the responses a model offers through `try_write_values`;
        `write(values)` stands for `write_through`'s `write(StreamItem(InferResponse(..., values=values),
        False))` with the model name, version and id of the stream's earlier responses, and must give the
        client the same bytes. It returns whether it took them."""
        self._write_values = write

    def try_write_values(self, values: dict) -> bool:
        """For a model: on the loop, offer a non-final response that carries only `values` (the same model
        name, version and id as the stream's earlier responses) to the frontend's values writer. True: it
        reached the client, as `send` would have sent it. False (no values writer, off the loop, the stream
        closed or cancelled, an item still queued, the writer refused): nothing happened, send the response
        with `send`."""
        write = self._write_values
        if write is None or self._is_closed or self._is_cancelled or not self._is_waiting:
            return False
        if get_ident() != self._loop_thread:
            return False
        try:
            return write(values)
        except Exception:  # as in _deliver_on_loop: the frontend's own path meets the failure and handles it
            logger.exception("writing a streamed response through failed; the frontend takes the rest")
            self._write_through = self._write_values = None
            return False

    def _deliver(self, response: InferResponse | None, is_final: bool) -> None:
        if self._is_cancelled:
            return
        item = StreamItem(response, is_final)
        if self._is_on_loop():
            self._deliver_on_loop(item)
        else:
            self._loop.call_soon_threadsafe(self._deliver_on_loop, item)

    def _deliver_on_loop(self, item: StreamItem) -> None:
        write = self._write_through
        if write is not None and self._is_waiting and not item.is_final:
            try:
                if write(item):
                    return
            except Exception:  # the frontend's own path meets the same failure and handles it: never the model's
                logger.exception("writing a streamed response through failed; the frontend takes the rest")
                self._write_through = self._write_values = None
        self._is_waiting = False
        self._queue.put_nowait(item)

    def _can_cancel(self) -> bool:
        return not self._is_drained  # the client already has the whole stream: nothing left to cancel

    def _is_on_loop(self) -> bool:
        if self._loop_thread is not None:
            return get_ident() == self._loop_thread
        return _get_running_loop() is self._loop

    def cancel(self) -> None:
        super().cancel()
        if self._is_on_loop():
            self._finish()
        else:
            self._loop.call_soon_threadsafe(self._finish)

    def on_finish(self, callback: Callable[[], None]) -> None:
        """On the loop: call `callback()` once the frontend is done with the stream (its final item taken, or
        the stream cancelled), at once if it is already."""
        if self._finish_callbacks is None:
            callback()
        else:
            self._finish_callbacks.append(callback)

    def _finish(self) -> None:
        # The writer may refer back to this stream (through the request it encodes for): a cycle, which would
        # keep the request's inputs until a garbage collection.
        self._write_through = self._write_values = None
        callbacks, self._finish_callbacks = self._finish_callbacks, None
        for callback in callbacks or ():
            callback()

    def __aiter__(self):
        return self._items()

    async def _items(self):
        while True:
            if self._queue.empty():
                self._is_waiting = True
                try:
                    item = await self._queue.get()
                finally:
                    self._is_waiting = False
            else:
                item = self._queue.get_nowait()
            if item.is_final:
                self._is_drained = True
                self._finish()
            yield item
            if item.is_final:
                return
