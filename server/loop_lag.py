"""A probe of the event loop's lag: a callback due every interval, timed against when it was due.

A callback runs late by as long as whatever ran on the loop before it held the loop (a large JSON body parsed
there, a blocking call): the lag an unrelated request waits before its own turn. The probe costs one timer per
interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class LoopLagProbe:
    def __init__(self, interval_s: float, observe: Callable[[float], None]):
        self._interval_s = interval_s
        self._observe = observe
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """On the loop to probe."""
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        """On the same loop."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + self._interval_s
        self._handle = loop.call_at(due, self._ran, loop, due)

    def _ran(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self._observe(max(0.0, loop.time() - due))
        self._schedule(loop)
