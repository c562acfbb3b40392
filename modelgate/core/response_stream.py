"""The responses of one request on their way from a model (any thread) to a frontend (the loop).

A decoupled model sends 0..n responses and then a final flag, possibly from threads of
its own and after `execute` returned. `ResponseStream.send` is safe to call from any
thread; the frontend iterates the stream on the event loop until the final item.
Cancelling the stream (client gone, stream cancelled) is visible to the model through
`is_cancelled`; items sent after cancellation are dropped.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from modelgate.core.inference_types import InferResponse


@dataclass
class StreamItem:
    """One step of a stream: a response (or None for a bare final flag) and whether it is the last."""

    response: InferResponse | None
    is_final: bool


class ResponseStream:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._lock = threading.Lock()
        self._is_closed = False
        self._is_cancelled = False
        self._cancel_callbacks: list = []
        self._is_drained = False  # the final item was handed to the frontend

    def send(self, response: InferResponse | None, is_final: bool) -> None:
        """Queue a response and/or the final flag; raises RuntimeError once the stream is closed."""
        with self._lock:
            if self._is_closed:
                raise RuntimeError("the response stream is closed: the final flag was already sent")
            self._is_closed = is_final
        if self._is_cancelled:
            return
        item = StreamItem(response, is_final)
        if _running_loop() is self._loop:
            self._queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def fail(self, response: InferResponse) -> None:
        """Send `response` (carrying an error) as the final item, unless the stream is closed."""
        with self._lock:
            if self._is_closed:
                return
        try:
            self.send(response, is_final=True)
        except RuntimeError:
            pass

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def cancel(self) -> None:
        """Mark cancelled (idempotent) and run the cancel callbacks once, e.g. to free engine resources."""
        with self._lock:  # against on_cancel from a backend thread: no callback may be lost
            if self._is_cancelled or self._is_drained:
                return
            self._is_cancelled = True
            callbacks, self._cancel_callbacks = self._cancel_callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback) -> None:
        """Call `callback()` when the stream is cancelled (at once if it already is)."""
        with self._lock:
            if not self._is_cancelled:
                self._cancel_callbacks.append(callback)
                return
        callback()

    def is_cancelled(self) -> bool:
        return self._is_cancelled

    def __aiter__(self):
        return self._items()

    async def _items(self):
        while True:
            item = await self._queue.get()
            if item.is_final:
                self._is_drained = True
            yield item
            if item.is_final:
                return


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
