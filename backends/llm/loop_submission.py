"""Which LLM requests the event loop hands to the engine itself, rather than through the model instance's thread.

On the instance's thread a request costs two thread hand-offs: the loop wakes the thread (ThreadPoolExecutor), and
the thread wakes the loop with the outcome. Measured on the 2-core VM (tiny_llm, 64 streams, 4 output tokens per
request, benchmarks' llm_server_cpu_per_token setup), that path took about 90 µs of the instance thread's CPU per
request, while checking, tokenizing and sending the same request on the loop took about 60. So a request that
is quick to check goes to the engine from the loop (LLMModelInstance.submit), where it arrives:

- its prompt is text, not chat messages (rendered with a Jinja template), and its text inputs and string
  parameters hold at most MAX_LOOP_INPUT_BYTES bytes together: tokenizing that many characters took about
  40-75 µs there (tiny_llm's BPE), less than the hand-off it saves; longer prompts stay off the loop;
- its message to the engine goes out in one write that cannot block (`send_without_blocking`): the engine reads
  its requests between steps, so a long step can fill the pipe, and the loop must never wait for it. A request
  the pipe cannot take at once goes to the instance's thread, as every request did before.
"""

from __future__ import annotations

import asyncio
import select
from multiprocessing.connection import Connection

from modelgate.core.inference_types import InferRequest

MAX_LOOP_INPUT_BYTES = 512
# multiprocessing writes a payload of up to 16 KiB and its 4-byte length header in one write; a write of at most
# PIPE_BUF bytes to a pipe that polls writable never blocks (nor, with this much room, to a Unix socket).
MAX_NONBLOCKING_PAYLOAD = select.PIPE_BUF - 4


def is_quick_to_submit(request: InferRequest) -> bool:
    """A text prompt whose BYTES inputs (one element each) and string parameters hold at most
    MAX_LOOP_INPUT_BYTES bytes; anything else (chat messages, a batch of strings, list parameters) is not."""
    if "chat_messages" in request.inputs:
        return False
    num_bytes = 0
    for tensor in request.inputs.values():
        if tensor.datatype != "BYTES":
            continue
        data = tensor.data
        if data is None or data.size != 1:
            return False
        value = data.reshape(-1)[0]
        if not isinstance(value, bytes | str):
            return False
        num_bytes += len(value)
    for value in request.parameters.values():
        if isinstance(value, str):
            num_bytes += len(value)
        elif not isinstance(value, bool | int | float):
            return False
    return num_bytes <= MAX_LOOP_INPUT_BYTES


def room_poller(connection: Connection) -> select.poll:
    """What `send_without_blocking` asks whether `connection` has room."""
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLOUT)
    return poller


def send_without_blocking(connection: Connection, room: select.poll, payload: bytes) -> bool:
    """Send `payload` if that cannot block; False, nothing sent, if it is too large for one atomic write or the
    reader has left no room. A connection whose reader is gone polls ready: its send raises OSError, as `send`'s."""
    if len(payload) > MAX_NONBLOCKING_PAYLOAD or not room.poll(0):
        return False
    connection.send_bytes(payload)
    return True


def completed(value) -> asyncio.Future:
    """A future of the running loop that holds `value` already: awaiting it does not suspend."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
