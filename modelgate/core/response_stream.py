"""The responses of one request on their way from a model (any thread) to a frontend (the loop).

A decoupled model sends 0..n responses and then a final flag, possibly from threads of
its own and after `execute` returned. `ResponseStream.send` is safe to call from any
thread; the frontend iterates the stream on the event loop until the final item.
Cancelling the stream (client gone, stream cancelled) is visible to the model through
`is_cancelled`; items sent after cancellation are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from modelgate.core.inference_types import InferResponse
from modelgate.core.sink_state import SinkState


@dataclass
class StreamItem:
    """One step of a stream: a response (or None for a bare final flag) and whether it is the last."""

    response: InferResponse | None
    is_final: bool


class ResponseStream(SinkState):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._loop = loop
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._is_drained = False  # the final item was handed to the frontend
        self._finish_callbacks: list[Callable[[], None]] | None = []  # None once finished

    def _deliver(self, response: InferResponse | None, is_final: bool) -> None:
        if self._is_cancelled:
            return
        item = StreamItem(response, is_final)
        if _running_loop() is self._loop:
            self._queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _can_cancel(self) -> bool:
        return not self._is_drained  # the client already has the whole stream: nothing left to cancel

    def cancel(self) -> None:
        super().cancel()
        if _running_loop() is self._loop:
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
        callbacks, self._finish_callbacks = self._finish_callbacks, None
        for callback in callbacks or ():
            callback()

    def __aiter__(self):
        return self._items()

    async def _items(self):
        while True:
            item = await self._queue.get()
            if item.is_final:
                self._is_drained = True
                self._finish()
            yield item
            if item.is_final:
                return


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
