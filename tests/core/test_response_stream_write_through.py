"""ResponseStream.write_through: items reach the writer in the delivering call while the iterator waits, and
reach the client in the order sent whether the writer takes them or not."""

import asyncio
import sys
import threading

from modelgate.core.inference_types import InferResponse
from modelgate.core.response_stream import ResponseStream


def _response(number: int) -> InferResponse:
    return InferResponse("m", "1", id=str(number))


class _Writer:
    """Takes items unless told to refuse some numbers; records what it took."""

    def __init__(self, refuse=()):
        self.refuse = set(refuse)
        self.taken: list[str] = []

    def __call__(self, item) -> bool:
        if item.response.id in {str(n) for n in self.refuse}:
            return False
        self.taken.append(item.response.id)
        return True


async def _iterate(stream: ResponseStream, seen: list[str]) -> None:
    async for item in stream:
        seen.append(item.response.id if item.response is not None else "final")


async def test_items_go_to_the_writer_while_the_iterator_waits():
    stream = ResponseStream(asyncio.get_running_loop())
    writer, seen = _Writer(), []
    stream.write_through(writer)
    reading = asyncio.create_task(_iterate(stream, seen))
    await asyncio.sleep(0)  # the iterator now waits
    for number in range(3):
        stream.send(_response(number), is_final=False)
    assert writer.taken == ["0", "1", "2"] and seen == []  # taken in the delivering call, no wake-up needed
    stream.send(_response(3), is_final=True)  # the final item is never offered: the iterator ends with it
    await reading
    assert seen == ["3"]


async def test_an_item_refused_waits_for_the_iterator_and_later_ones_keep_their_order():
    stream = ResponseStream(asyncio.get_running_loop())
    writer, seen = _Writer(refuse=[1]), []
    stream.write_through(writer)
    reading = asyncio.create_task(_iterate(stream, seen))
    await asyncio.sleep(0)
    for number in range(4):
        stream.send(_response(number), is_final=False)
    # 1 was refused: 2 and 3 queue behind it rather than overtake it
    assert writer.taken == ["0"]
    await asyncio.sleep(0.01)  # the iterator takes 1, 2, 3 and waits again
    assert seen == ["1", "2", "3"]
    stream.send(_response(4), is_final=False)
    assert writer.taken == ["0", "4"]
    stream.send(None, is_final=True)
    await reading
    assert seen == ["1", "2", "3", "final"]


async def test_nothing_is_written_through_before_the_iterator_waits():
    stream = ResponseStream(asyncio.get_running_loop())
    writer, seen = _Writer(), []
    stream.write_through(writer)
    stream.send(_response(0), is_final=False)  # nobody iterates yet
    stream.send(_response(1), is_final=True)
    await _iterate(stream, seen)
    assert writer.taken == [] and seen == ["0", "1"]


async def _read_recording_writer_threads(stream: ResponseStream):
    """Give `stream` a writer that takes every item and records the thread it runs on, and start reading it:
    (those threads, the items the iterator saw, the reading task)."""
    threads: list[threading.Thread] = []

    def writer(item) -> bool:
        threads.append(threading.current_thread())
        return True

    stream.write_through(writer)
    seen: list[str] = []
    reading = asyncio.create_task(_iterate(stream, seen))
    await asyncio.sleep(0)
    return threads, seen, reading


async def test_items_sent_from_another_thread_are_written_on_the_loop():
    loop = asyncio.get_running_loop()
    stream = ResponseStream(loop)
    threads, seen, reading = await _read_recording_writer_threads(stream)

    def model():
        for number in range(3):
            stream.send(_response(number), is_final=False)
        stream.send(None, is_final=True)

    await asyncio.to_thread(model)
    await reading
    assert seen == ["final"] and len(threads) == 3
    assert all(thread is threading.main_thread() for thread in threads)


async def test_a_cancelled_stream_writes_nothing_more():
    stream = ResponseStream(asyncio.get_running_loop())
    writer = _Writer()
    stream.write_through(writer)
    reading = asyncio.create_task(_iterate(stream, []))
    await asyncio.sleep(0)
    stream.cancel()
    stream.send(_response(0), is_final=False)
    assert writer.taken == []
    reading.cancel()


async def test_a_writer_that_raises_hands_that_item_and_the_rest_to_the_iterator():
    stream = ResponseStream(asyncio.get_running_loop())
    calls: list[str] = []

    def writer(item) -> bool:
        calls.append(item.response.id)
        raise ConnectionResetError("gone")

    stream.write_through(writer)
    seen: list[str] = []
    reading = asyncio.create_task(_iterate(stream, seen))
    await asyncio.sleep(0)
    stream.send(_response(0), is_final=False)  # the sender (a model) never sees the writer's error
    await asyncio.sleep(0.01)
    stream.send(_response(1), is_final=True)
    await reading
    assert calls == ["0"] and seen == ["0", "1"]


async def test_a_finished_stream_lets_go_of_its_writer():
    # a writer that refers back to the stream (through the request it encodes for) would otherwise make a
    # cycle holding the request's inputs until a garbage collection
    stream = ResponseStream(asyncio.get_running_loop())
    writer = _Writer()
    stream.write_through(writer)
    reading = asyncio.create_task(_iterate(stream, []))
    await asyncio.sleep(0)
    stream.send(_response(0), is_final=True)
    await reading
    assert sys.getrefcount(writer) == 2  # this frame's name and getrefcount's argument: the stream holds none


async def test_a_cancelled_stream_lets_go_of_its_writer():
    stream = ResponseStream(asyncio.get_running_loop())
    writer = _Writer()
    stream.write_through(writer)
    stream.cancel()
    assert sys.getrefcount(writer) == 2


async def test_a_stream_made_off_its_loop_tells_the_loop_from_other_threads_too():
    loop = asyncio.get_running_loop()
    stream = await asyncio.to_thread(ResponseStream, loop)  # made where no loop runs: its loop's thread unknown
    threads, seen, reading = await _read_recording_writer_threads(stream)
    stream.send(_response(0), is_final=False)
    assert len(threads) == 1  # on the loop: written in the delivering call
    await asyncio.to_thread(stream.send, _response(1), False)
    await asyncio.sleep(0.01)
    stream.send(None, is_final=True)
    await reading
    assert seen == ["final"] and threads == [threading.main_thread()] * 2
