"""ResponseStream.try_write_values: a model's values-only response reaches the frontend's values writer in the
call that offers it, only where `send` would have handed it to the client as the next item; otherwise nothing
happens and the model sends it as a response."""

import asyncio
import sys
import threading

from modelgate.core.inference_types import InferResponse
from modelgate.core.response_stream import ResponseStream
from modelgate.core.sink_state import SinkState


class _ValuesWriter:
    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.taken: list[dict] = []

    def __call__(self, values: dict) -> bool:
        if self.refuse:
            return False
        self.taken.append(values)
        return True


async def _iterate(stream: ResponseStream, seen: list[str]) -> None:
    async for item in stream:
        seen.append(item.response.values["text_output"] if item.response is not None else "final")


def _response(text: str) -> InferResponse:
    return InferResponse("m", "1", values={"text_output": text})


async def _waiting_stream(writer) -> tuple[ResponseStream, list[str], asyncio.Task]:
    stream = ResponseStream(asyncio.get_running_loop())
    stream.write_values_through(writer)
    seen: list[str] = []
    reading = asyncio.create_task(_iterate(stream, seen))
    await asyncio.sleep(0)  # the iterator now waits
    return stream, seen, reading


async def test_values_go_to_the_writer_while_the_iterator_waits():
    writer = _ValuesWriter()
    stream, seen, reading = await _waiting_stream(writer)
    assert stream.try_write_values({"text_output": "a"}) and stream.try_write_values({"text_output": "b"})
    assert writer.taken == [{"text_output": "a"}, {"text_output": "b"}] and seen == []
    stream.send(_response("c"), is_final=True)
    await reading
    assert seen == ["c"]


async def test_nothing_is_taken_without_a_values_writer_or_before_the_iterator_waits():
    stream = ResponseStream(asyncio.get_running_loop())
    assert not stream.try_write_values({"text_output": "a"})
    writer = _ValuesWriter()
    stream.write_values_through(writer)
    assert not stream.try_write_values({"text_output": "a"})  # nobody iterates yet
    assert writer.taken == []
    assert not SinkState().try_write_values({"text_output": "a"})  # a sink that writes nothing at once


async def test_values_never_overtake_a_queued_item():
    writer = _ValuesWriter()
    stream, seen, reading = await _waiting_stream(writer)
    stream.send(_response("a"), is_final=False)  # no item writer: queued for the iterator
    assert not stream.try_write_values({"text_output": "b"})
    stream.send(_response("b"), is_final=False)  # what the model does when refused
    await asyncio.sleep(0.01)  # the iterator takes both and waits again
    assert seen == ["a", "b"]
    assert stream.try_write_values({"text_output": "c"})
    stream.send(None, is_final=True)
    await reading
    assert seen == ["a", "b", "final"] and writer.taken == [{"text_output": "c"}]


async def test_a_refusing_writer_leaves_the_response_to_send():
    writer = _ValuesWriter(refuse=True)
    stream, seen, reading = await _waiting_stream(writer)
    assert not stream.try_write_values({"text_output": "a"})
    stream.send(_response("a"), is_final=True)
    await reading
    assert seen == ["a"]


async def test_a_cancelled_or_closed_stream_takes_nothing():
    writer = _ValuesWriter()
    stream, _, reading = await _waiting_stream(writer)
    stream.cancel()
    assert not stream.try_write_values({"text_output": "a"})
    reading.cancel()
    stream, _, reading = await _waiting_stream(writer)
    stream.send(None, is_final=True)  # closed: `send` would raise, and so the model learns it
    assert not stream.try_write_values({"text_output": "a"})
    await reading
    assert writer.taken == []


async def test_off_the_loop_nothing_is_taken():
    writer = _ValuesWriter()
    stream, _, reading = await _waiting_stream(writer)
    assert not await asyncio.to_thread(stream.try_write_values, {"text_output": "a"})
    assert writer.taken == []
    stream.send(None, is_final=True)
    await reading


async def test_a_writer_that_raises_hands_that_response_and_the_rest_to_the_iterator():
    calls: list[dict] = []

    def writer(values: dict) -> bool:
        calls.append(values)
        raise ConnectionResetError("gone")

    stream, seen, reading = await _waiting_stream(writer)
    assert not stream.try_write_values({"text_output": "a"})  # the model never sees the writer's error
    stream.send(_response("a"), is_final=False)
    await asyncio.sleep(0.01)
    assert not stream.try_write_values({"text_output": "b"})  # the writer is dropped
    stream.send(_response("b"), is_final=True)
    await reading
    assert len(calls) == 1 and seen == ["a", "b"]


async def test_a_finished_or_cancelled_stream_lets_go_of_its_values_writer():
    writer = _ValuesWriter()
    stream, _, reading = await _waiting_stream(writer)
    stream.send(_response("a"), is_final=True)
    await reading
    assert sys.getrefcount(writer) == 2  # this frame's name and getrefcount's argument: the stream holds none
    stream = ResponseStream(asyncio.get_running_loop())
    stream.write_values_through(writer)
    stream.cancel()
    assert sys.getrefcount(writer) == 2


async def test_values_written_from_the_loop_thread_only():
    threads: list[threading.Thread] = []

    def writer(values: dict) -> bool:
        threads.append(threading.current_thread())
        return True

    stream, _, reading = await _waiting_stream(writer)
    stream.try_write_values({"text_output": "a"})
    stream.send(None, is_final=True)
    await reading
    assert threads == [threading.main_thread()]
