"""What a stream-stream method served on the loop may write its responses through, rather than yield them.

A yielded response reaches the transport when the method's generator is next resumed: a response produced
elsewhere on the loop (a model's stream delivering a token) first goes into a queue the method reads, and each
costs a wake-up of the method's task and of the task serving the call. Written, it goes out in the call that
produced it. `StreamCall` (loop_stream.py) offers itself as the `response_writer` of the method's context.

Invariants: every method runs on the loop; responses written and yielded go out in the order they were written
or yielded; once the RPC has ended, nothing more is sent (writes are dropped).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class ResponseWriter(Protocol):
    def write(self, response) -> None:
        """Queue `response` (a message of the method's response type) whatever the client's pace; a caller that
        can wait for the client awaits `drained()` first. One that cannot be serialized ends the RPC (INTERNAL)."""

    def write_serialized(self, serialized: bytes) -> None:
        """`write` of a response already serialized (the bytes of a message of the method's response type)."""

    def try_write_serialized(self, serialized: bytes) -> bool:
        """Queue a response already serialized, unless the client is behind (`drained()` is not None) or the RPC
        has ended; whether it was queued. Not queued, nothing happened: the caller sends it another way."""

    def drained(self) -> asyncio.Future | None:
        """None while the client keeps up; else a future that completes once it has caught up (a bounded number
        of responses wait unsent), which the method's producers await before writing more."""
