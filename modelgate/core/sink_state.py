"""The bookkeeping every response sink shares: closed once by the final flag, cancelled once, callbacks on cancel.

Subclasses deliver items (`_deliver`); this class decides, under one lock, whether an item may still be sent and
runs the cancel callbacks exactly once, whichever thread cancels or registers first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from modelgate.core.inference_types import InferResponse


class SinkState:
    def __init__(self):
        self._lock = threading.Lock()
        self._is_closed = False
        self._is_cancelled = False
        self._cancel_callbacks: list[Callable[[], None]] = []

    def send(self, response: InferResponse | None, is_final: bool) -> None:
        """Deliver a response and/or the final flag; raises RuntimeError once the final flag was sent."""
        with self._lock:
            if self._is_closed:
                raise RuntimeError("the response stream is closed: the final flag was already sent")
            self._is_closed = is_final
        self._deliver(response, is_final)

    def _deliver(self, response: InferResponse | None, is_final: bool) -> None:
        raise NotImplementedError

    def try_write_values(self, values: dict) -> bool:
        """Offer a non-final response that carries only `values` to be written to the client at once; False
        (always, here: see ResponseStream) means nothing happened and the sender sends it with `send`."""
        return False

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

    def is_cancelled(self) -> bool:
        return self._is_cancelled

    def cancel(self) -> None:
        """Mark cancelled (idempotent) and run the cancel callbacks once."""
        with self._lock:  # against on_cancel from another thread: no callback may be lost
            if self._is_cancelled or not self._can_cancel():
                return
            self._is_cancelled = True
            callbacks, self._cancel_callbacks = self._cancel_callbacks, []
        for callback in callbacks:
            callback()

    def _can_cancel(self) -> bool:
        return True

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the stream is cancelled (at once if it already is)."""
        with self._lock:
            if not self._is_cancelled:
                self._cancel_callbacks.append(callback)
                return
        callback()
