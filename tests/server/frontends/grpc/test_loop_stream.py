"""Stream-stream calls served by LoopCalls on their own: async generators of a probe service (bytes in, bytes out)
behind grpcio's threaded server, run on a loop thread with no handler or reader thread. What the threaded path
did must hold: every response in order, then the status; aborts, errors, unserializable responses, refused
requests; cancellation (client cancel, deadline, server stop) back to the loop; a slow client pauses the method."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time

import grpc
import pytest

from modelgate.server.frontends.grpc import loop_stream
from modelgate.server.frontends.grpc.loop_calls import LoopCalls
from modelgate.server.frontends.grpc.threaded_bridge import RpcAbort
from tests.server.frontends.grpc.grpc_helpers import WAIT_S
from tests.server.frontends.grpc.probe_service import (
    STREAMS,
    StreamProbe,
    assert_an_awaited_abort_ends_the_stream_with_its_status,
    assert_client_cancel_cancels_the_method,
    assert_half_closed_count_gets_every_response,
    assert_server_stop_cancels_an_open_stream,
    error_after_the_first_response,
    loop_on_a_thread,
    probe_server,
    requests_then_wait,
    stream,
)

BIG_RESPONSE = 256 * 1024  # large enough that a client that does not read stops grpc's sends (flow control)


class ProbeServicer(StreamProbe):
    def __init__(self):
        super().__init__()
        self.produced = 0
        self.refused = 0  # responses the response writer refused (the client behind)

    async def Unserializable(self, requests, context):
        async for request in requests:
            yield request
            yield object()

    async def Flood(self, requests, context):
        """Answers each request (a count) with that many big responses, counting what it produced."""
        async for request in requests:
            for index in range(int(request)):
                self.produced += 1
                yield index.to_bytes(4, "big") * (BIG_RESPONSE // 4)

    async def Metadata(self, requests, context):
        async for _ in requests:
            self.mark("metadata")
            yield dict(context.invocation_metadata())["probe-key"].encode()

    async def WriteFlood(self, requests, context):
        """Flood through the response writer, as a stream's write-through does: serialized responses while the
        client keeps up; refused, the rest waits for `drained()` and goes through `write`."""
        writer = context.response_writer
        async for request in requests:
            for index in range(int(request)):
                self.produced += 1
                response = index.to_bytes(4, "big") * (BIG_RESPONSE // 4)
                if writer.try_write_serialized(response):
                    continue
                self.refused += 1
                while (drained := writer.drained()) is not None:
                    await drained
                writer.write(response)
        if False:
            yield

    async def WriteAndYield(self, requests, context):
        """Each request's bytes written, then yielded, then written again: the client gets them in that order."""
        writer = context.response_writer
        async for request in requests:
            writer.write(request + b"-written")
            yield request + b"-yielded"
            assert writer.try_write_serialized(request + b"-serialized")

    async def WriteSerializedSteps(self, requests, context):
        """Each request (a count) answered as an LLM's tokens are: that many small serialized responses, one per
        loop iteration or several in one (a send then still in flight), each one accepted."""
        writer = context.response_writer
        async for request in requests:
            for index in range(int(request)):
                assert writer.try_write_serialized(index.to_bytes(4, "big"))
                if index % 3 == 0:
                    await asyncio.sleep(0)
        if False:
            yield

    async def WriteAfterCancel(self, requests, context):
        """Writes once, then again once the client cancelled (the RPC's end cancels this task): the writer must
        refuse that one."""
        writer = context.response_writer
        async for request in requests:
            assert writer.try_write_serialized(request)
            try:
                await asyncio.Event().wait()
            finally:
                self.mark("accepted" if writer.try_write_serialized(request) else "refused")
        if False:
            yield

    async def WriteUnserializable(self, requests, context):
        async for request in requests:
            context.response_writer.write(request)
            context.response_writer.write(object())
            await asyncio.Event().wait()  # the RPC ends with the write's status: this task is cancelled
        if False:
            yield


METHODS = (
    *STREAMS,
    "Unserializable",
    "Flood",
    "Metadata",
    "WriteFlood",
    "WriteAndYield",
    "WriteUnserializable",
    "WriteSerializedSteps",
    "WriteAfterCancel",
)


def _decode(raw: bytes) -> bytes:
    if raw.startswith(b"bad"):
        raise RpcAbort(grpc.StatusCode.INVALID_ARGUMENT, f"refused {raw.decode()}")
    return raw


def _serialize(response) -> bytes:
    if not isinstance(response, bytes):
        raise TypeError("not bytes")
    return response


def _never_threaded(request_iterator, context):
    raise AssertionError("a LoopCalls stream ran on a thread")


@pytest.fixture
def probe():
    """(servicer, channel, server, loop thread): a threaded server whose probe streams LoopCalls runs on a loop
    thread; grpc's handler pool is one that fails the test if any work reaches it."""
    with loop_on_a_thread() as (loop, loop_thread):
        servicer = ProbeServicer()
        fallback = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="probe-fallback")
        calls = LoopCalls(loop, fallback)
        handlers = {}
        for name in METHODS:
            behaviour = calls.stream_handler(_never_threaded, getattr(servicer, name), _decode, _serialize)
            handlers[name] = grpc.stream_stream_rpc_method_handler(behaviour, response_serializer=_serialize)
        with probe_server(handlers, 2) as (server, channel):
            yield servicer, channel, server, loop_thread
        fallback.shutdown(wait=False)


def test_a_stream_half_closed_with_responses_pending_gets_them_all_from_the_loop(probe):
    servicer, channel, _, loop_thread = probe
    assert_half_closed_count_gets_every_response(channel)
    assert servicer.threads == {loop_thread}


def test_requests_and_responses_interleave_on_an_open_stream_and_a_client_cancel_reaches_the_loop(probe):
    servicer, channel, _, _ = probe
    held_open = threading.Event()
    assert_client_cancel_cancels_the_method(servicer, channel, held_open, b"a", b"b", b"c")
    held_open.set()


def test_a_stream_with_no_requests_and_no_responses_ends_ok(probe):
    _, channel, _, _ = probe
    call = stream(channel, "Count")(iter([]), timeout=WAIT_S)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_the_context_is_the_calls(probe):
    servicer, channel, _, _ = probe
    call = stream(channel, "Metadata")(iter([b"x"]), metadata=(("probe-key", "probe-value"),), timeout=WAIT_S)
    assert list(call) == [b"probe-value"]


def test_a_deadline_cancels_the_method_on_the_loop(probe):
    servicer, channel, _, _ = probe
    held_open = threading.Event()
    call = stream(channel, "EchoThenHang")(requests_then_wait(held_open, b"a"), timeout=0.5)
    assert next(call) == b"a"
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.wait_for("stream-cancelled")
    held_open.set()


def test_a_server_error_ends_the_rpc_as_grpcio_ends_it_and_is_logged(probe, caplog):
    _, channel, _, _ = probe
    held_open = threading.Event()
    with caplog.at_level(logging.ERROR, logger=loop_stream.__name__):
        error = error_after_the_first_response(channel, "FailAfterOne", held_open, b"one", b"two")
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == "Exception iterating responses: the probe fails"
    assert "the probe fails" in caplog.text
    held_open.set()


def test_an_awaited_abort_ends_the_stream_with_its_status_after_the_responses_before(probe):
    _, channel, _, _ = probe
    assert_an_awaited_abort_ends_the_stream_with_its_status(channel)


def test_a_response_that_cannot_be_serialized_is_an_internal_error_after_the_ones_before(probe):
    _, channel, _, _ = probe
    call = stream(channel, "Unserializable")(iter([b"fine"]), timeout=WAIT_S)
    assert next(call) == b"fine"
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INTERNAL, "Failed to serialize response!")


def test_a_refused_request_ends_the_stream_with_its_status_and_cancels_the_method(probe):
    servicer, channel, _, _ = probe
    held_open = threading.Event()
    error = error_after_the_first_response(channel, "EchoThenHang", held_open, b"good", b"bad one")
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "refused bad one")
    assert servicer.wait_for("stream-cancelled")
    held_open.set()


def test_stopping_the_server_with_a_stream_open_cancels_it_without_hanging(probe):
    servicer, channel, server, _ = probe
    held_open = threading.Event()
    assert_server_stop_cancels_an_open_stream(servicer, channel, server, held_open)
    held_open.set()


def test_a_client_that_does_not_read_pauses_the_method_and_then_gets_everything_in_order(probe):
    servicer, channel, _, _ = probe
    count = 4 * loop_stream.MAX_UNSENT
    call = stream(channel, "Flood")(iter([str(count).encode()]), timeout=WAIT_S)
    first = next(call)  # the stream is open and the method running; now the client stops reading
    _wait_until_steady(lambda: servicer.produced)
    # What grpc took into its flow-control windows, plus the queue: far from all of them.
    assert servicer.produced < count - loop_stream.MAX_UNSENT
    rest = list(call)
    assert [int.from_bytes(response[:4], "big") for response in [first, *rest]] == list(range(count))
    assert all(len(response) == BIG_RESPONSE for response in rest)
    assert call.code() == grpc.StatusCode.OK


def test_the_response_writer_refuses_while_the_client_is_behind_and_everything_arrives_in_order(probe):
    servicer, channel, _, _ = probe
    count = 4 * loop_stream.MAX_UNSENT
    call = stream(channel, "WriteFlood")(iter([str(count).encode()]), timeout=WAIT_S)
    first = next(call)
    _wait_until_steady(lambda: servicer.produced)
    assert servicer.produced < count - loop_stream.MAX_UNSENT
    assert servicer.refused >= 1  # the writer refused once the client was behind: the method then waited
    rest = list(call)
    assert [int.from_bytes(response[:4], "big") for response in [first, *rest]] == list(range(count))
    assert call.code() == grpc.StatusCode.OK


def test_written_and_yielded_responses_go_out_in_the_order_the_method_gave_them(probe):
    servicer, channel, _, _ = probe
    call = stream(channel, "WriteAndYield")(iter([b"a", b"b"]), timeout=WAIT_S)
    expected = [f"{name}-{how}".encode() for name in "ab" for how in ("written", "yielded", "serialized")]
    assert list(call) == expected
    assert call.code() == grpc.StatusCode.OK


def test_serialized_responses_written_faster_than_they_are_sent_all_arrive_in_order(probe):
    servicer, channel, _, _ = probe
    call = stream(channel, "WriteSerializedSteps")(iter([b"50", b"7"]), timeout=WAIT_S)
    assert [int.from_bytes(response, "big") for response in call] == [*range(50), *range(7)]
    assert call.code() == grpc.StatusCode.OK


def test_the_response_writer_refuses_serialized_responses_once_the_client_cancelled(probe):
    servicer, channel, _, _ = probe
    held_open = threading.Event()
    call = stream(channel, "WriteAfterCancel")(requests_then_wait(held_open, b"token"), timeout=WAIT_S)
    assert next(call) == b"token"
    call.cancel()
    held_open.set()
    assert servicer.wait_for("refused")
    assert "accepted" not in servicer.seen


def test_a_written_response_that_cannot_be_serialized_ends_the_rpc_as_a_yielded_one_does(probe, caplog):
    _, channel, _, _ = probe
    call = stream(channel, "WriteUnserializable")(iter([b"fine"]), timeout=WAIT_S)
    with caplog.at_level(logging.ERROR, logger=loop_stream.__name__):
        assert next(call) == b"fine"
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INTERNAL, "Failed to serialize response!")
    assert "Exception serializing response!" in caplog.text


def test_streams_and_their_requests_do_not_mix(probe):
    _, channel, _, _ = probe
    calls = [stream(channel, "Count")(iter([str(n).encode()]), timeout=WAIT_S) for n in (5, 9, 13)]
    assert [[int(response) for response in call] for call in calls] == [list(range(n)) for n in (5, 9, 13)]


def _wait_until_steady(read, settle_s: float = 0.5) -> None:
    """Wait until `read()` stops changing for `settle_s` (bounded by WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    last = read()
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = read()
        if now == last:
            return
        last = now
