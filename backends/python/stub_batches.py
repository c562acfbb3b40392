"""The batches a stub has been sent and not yet answered: how many, how large, and how their results are set.

Sends from the event loop must never wait, so only small batches go from there, and only while the frames of
all unanswered batches fit the stub's socket buffer; the rest go from the instance's thread.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass

from modelgate.backends.base import ExecuteResult
from modelgate.core.inference_types import InferRequest

# Batches the scheduler may hand a stub at once (ModelInstance.pipeline_depth): the stub runs them one after the
# other without waiting for the server in between (benchmarks/python_backend_vs_triton.py: add_sub over HTTP on one
# core, 2,122 req/s at depth 1, 2,648 at 4, 2,799 at 8).
PIPELINE_DEPTH = 8
# Frames sent from the event loop must never wait: a batch is sent there only while the frames of every batch the
# stub has not answered fit the work socket's buffer (about 200 KiB on Linux) with room to spare. Larger batches go
# from the instance's thread, which may wait.
LOOP_SUBMIT_MAX_BYTES = 64 << 10
LOOP_IN_FLIGHT_MAX_BYTES = 128 << 10


@dataclass
class PendingBatch:
    result: Future | asyncio.Future  # of its ExecuteResult: asyncio's when sent from the loop that reads the stub
    requests: list[InferRequest]
    keys: list[int]
    frame_bytes: int

    def settle(self, result: ExecuteResult) -> None:
        """Set the result, from any thread."""
        future = self.result
        if not isinstance(future, asyncio.Future):
            future.set_result(result)
            return
        loop = future.get_loop()
        if _running_loop() is loop:
            _set_unless_done(future, result)
        else:
            try:
                loop.call_soon_threadsafe(_set_unless_done, future, result)
            except RuntimeError:  # that loop is closed: nobody awaits the result
                pass


def _set_unless_done(future: asyncio.Future, result: ExecuteResult) -> None:
    if not future.done():  # the waiting task may have been cancelled
        future.set_result(result)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def payload_bytes(requests: list[InferRequest]) -> int:
    return sum(_tensor_bytes(t.data) for r in requests for t in r.inputs.values())


def _tensor_bytes(data) -> int:
    if data.dtype != object:
        return data.nbytes
    if data.size > 256:  # counting would itself take long: call it large
        return LOOP_SUBMIT_MAX_BYTES + 1
    return sum(len(x) if isinstance(x, (bytes, str)) else 0 for x in data.flat)
