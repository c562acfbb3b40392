"""StreamCall's sends against a core that allows one send in flight per call, as grpc core does: the interleaving
of the loop's write with grpc's polling thread chaining the next queued send, forced step by step; and a send
that core refuses, which must end the RPC rather than leave a hole in the stream.

Until session 27 the loop decided "nothing in flight, nothing queued" before taking the call's condition, so a
write could start its send just after `_on_sent` had taken the next queued response out and before its send
started: core refused the second send (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS) and a streamed token was lost, about
one stream in a hundred in tests/backends/llm/serving/test_grpc.py."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import grpc
import pytest

from modelgate.server.frontends.grpc import grpc_internals as internals
from modelgate.server.frontends.grpc.loop_stream import StreamCall

TOO_MANY_OPERATIONS = 8  # grpc_call_error's GRPC_CALL_ERROR_TOO_MANY_OPERATIONS


class OneSendCore:
    """A call's core side: one send in flight at most; a second is refused with TOO_MANY_OPERATIONS."""

    def __init__(self):
        self.in_flight: tuple | None = None  # (message, completion tag)
        self.sent: list[bytes] = []
        self.refused = 0

    def start_server_batch(self, operations, tag) -> int:
        if self.in_flight is not None:
            self.refused += 1
            return TOO_MANY_OPERATIONS
        self.in_flight = (operations[-1], tag)
        return 0

    def complete_send(self) -> None:
        """The polling thread: the send in flight completed; its tag runs (and may start the next)."""
        message, tag = self.in_flight
        self.in_flight = None
        self.sent.append(message)
        tag(None)


class PollingThreadFirst:
    """The call's condition; `before_next_acquire`, if set, runs once just before the next acquire is granted, as
    the polling thread finishing what it did holding the condition while the loop waited for it."""

    def __init__(self):
        self._lock = threading.RLock()
        self.before_next_acquire = None

    def acquire(self):
        run, self.before_next_acquire = self.before_next_acquire, None
        if run is not None:
            run()
        return self._lock.acquire()

    def release(self):
        self._lock.release()

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc):
        self.release()


@pytest.fixture
def call(monkeypatch):
    monkeypatch.setattr(internals, "SendMessage", lambda message, flags: message)
    aborted = []
    monkeypatch.setattr(internals, "abort", lambda state, call, code, details: aborted.append((code, details)))
    loop = asyncio.new_event_loop()
    core = OneSendCore()
    state = SimpleNamespace(
        condition=PollingThreadFirst(),
        client=internals.CLIENT_OPEN,
        statused=False,
        initial_metadata_allowed=False,  # sent with an earlier response
        disable_next_compression=False,
        due=set(),
        callbacks=[],
    )
    stream_call = StreamCall(loop, SimpleNamespace(call=core), state, behaviour=None)
    yield SimpleNamespace(stream=stream_call, core=core, state=state, aborted=aborted)
    loop.close()


def test_a_write_that_waited_for_the_polling_thread_queues_behind_the_send_it_started(call):
    stream, core, state = call.stream, call.core, call.state
    assert stream.try_write_serialized(b"1")  # starts at once
    assert stream.try_write_serialized(b"2")  # queued behind it
    assert core.in_flight[0] == b"1" and list(stream._unsent) == [b"2"]

    # "1" completed. The polling thread, in `_on_sent` and holding the condition, has marked nothing in flight
    # and taken "2" out of the queue, and has not started its send yet when the loop comes to write "3": nothing
    # in flight, nothing queued, as far as the loop could see without the condition. The loop waits for the
    # condition, which `_on_sent` gives up once the send of "2" started.
    core.in_flight = None
    core.sent.append(b"1")
    stream._is_sending = False
    taken = stream._unsent.popleft()
    state.condition.before_next_acquire = lambda: stream._send(taken)
    assert stream.try_write_serialized(b"3")

    assert core.refused == 0
    assert core.in_flight[0] == b"2" and list(stream._unsent) == [b"3"]
    core.complete_send()
    core.complete_send()
    assert core.sent == [b"1", b"2", b"3"] and core.in_flight is None and call.aborted == []


def test_writes_faster_than_sends_all_go_out_in_order_one_at_a_time(call):
    stream, core = call.stream, call.core
    for index in range(10):
        assert stream.try_write_serialized(b"%d" % index)
        if index % 3 == 2:
            core.complete_send()
    while core.in_flight is not None:
        core.complete_send()
    assert core.sent == [b"%d" % index for index in range(10)] and core.refused == 0


def test_a_send_that_core_refuses_ends_the_rpc_with_internal(call, caplog):
    stream, core = call.stream, call.core
    core.in_flight = (b"not ours", lambda event: None)  # core's books say a send is in flight; ours do not
    assert stream.try_write_serialized(b"1")
    assert core.refused == 1
    assert [code for code, _ in call.aborted] == [internals.cygrpc_code(grpc.StatusCode.INTERNAL)]
    assert "refused to send" in caplog.text
    assert not stream._is_sending
