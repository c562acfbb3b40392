"""ThreadedServicer on its own: async methods of a probe service (bytes in, bytes out) behind grpcio's
threaded server, their coroutines on a loop thread. What must cross the bridge: results, aborts, errors,
cancellation (client cancel, deadline, server stop) back to the loop, and both ends of a stream."""

from __future__ import annotations

import concurrent.futures
import threading

import grpc
import pytest

from modelgate.server.frontends.grpc.threaded_bridge import ThreadedServicer
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
    unary,
)

UNARY = ("Echo", "Abort", "Hang")


class ProbeServicer(StreamProbe):
    def __init__(self):
        super().__init__()
        self.loop_thread: threading.Thread | None = None


class RecordingPool(concurrent.futures.ThreadPoolExecutor):
    """A reader pool that keeps the future of each reader, to check that readers end."""

    def __init__(self):
        super().__init__(8, thread_name_prefix="probe-reader")
        self.readers: list[concurrent.futures.Future] = []

    def submit(self, *args, **kwargs):
        future = super().submit(*args, **kwargs)
        self.readers.append(future)
        return future

    def assert_readers_ended(self) -> None:
        _, running = concurrent.futures.wait(self.readers, timeout=WAIT_S)
        assert not running, "a stream's request reader is still blocked"


@pytest.fixture
def probe():
    """(servicer, channel, server, reader pool): a threaded server whose probe methods run on a loop thread."""
    with loop_on_a_thread() as (loop, loop_thread):
        servicer = ProbeServicer()
        servicer.loop_thread = loop_thread
        readers = RecordingPool()
        threaded = ThreadedServicer(servicer, loop, readers)
        handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(threaded, name)) for name in UNARY}
        handlers.update({name: grpc.stream_stream_rpc_method_handler(getattr(threaded, name)) for name in STREAMS})
        with probe_server(handlers, 16) as (server, channel):
            yield servicer, channel, server, readers
        readers.shutdown(wait=False)


def test_a_unary_result_comes_back_and_the_coroutine_ran_on_the_loop(probe):
    servicer, channel, _, _ = probe
    assert unary(channel, "Echo")(b"ping", timeout=WAIT_S) == b"ping"
    assert servicer.threads == {servicer.loop_thread}


def test_an_awaited_abort_ends_the_rpc_with_its_status(probe):
    _, channel, _, _ = probe
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Abort")(b"this", timeout=WAIT_S)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "refused this"


def test_a_deadline_cancels_the_coroutine_on_the_loop(probe):
    servicer, channel, _, _ = probe
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Hang")(b"deadline", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.wait_for("hang-cancelled-deadline")
    assert servicer.threads == {servicer.loop_thread}


def test_a_client_cancel_cancels_the_coroutine_on_the_loop(probe):
    servicer, channel, _, _ = probe
    call = unary(channel, "Hang").future(b"cancel", timeout=WAIT_S)
    assert servicer.wait_for("hang-started-cancel")
    call.cancel()
    assert servicer.wait_for("hang-cancelled-cancel")
    assert unary(channel, "Echo")(b"after", timeout=WAIT_S) == b"after"


def test_a_stream_half_closed_with_responses_pending_gets_them_all(probe):
    servicer, channel, _, readers = probe
    assert_half_closed_count_gets_every_response(channel)
    assert servicer.wait_for("count-read-all")
    readers.assert_readers_ended()


def test_a_stream_client_cancel_cancels_the_coroutine_and_its_reader(probe):
    servicer, channel, _, readers = probe
    held_open = threading.Event()
    assert_client_cancel_cancels_the_method(servicer, channel, held_open, b"a", b"b")
    readers.assert_readers_ended()
    held_open.set()


def test_a_stream_server_error_ends_the_rpc_and_its_reader(probe):
    _, channel, _, readers = probe
    held_open = threading.Event()
    error = error_after_the_first_response(channel, "FailAfterOne", held_open, b"one", b"two")
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert "the probe fails" in error.details()
    readers.assert_readers_ended()
    held_open.set()


def test_an_awaited_abort_in_a_stream_ends_it_with_its_status_after_the_responses_before(probe):
    _, channel, _, readers = probe
    assert_an_awaited_abort_ends_the_stream_with_its_status(channel, also=readers.assert_readers_ended)


def test_stopping_the_server_with_a_stream_open_cancels_it_without_hanging(probe):
    servicer, channel, server, readers = probe
    held_open = threading.Event()
    assert_server_stop_cancels_an_open_stream(servicer, channel, server, held_open)
    readers.assert_readers_ended()
    held_open.set()
