"""LoopCalls on its own: unary methods of a probe service (bytes in, bytes out) served by grpcio's threaded
server with their coroutines on a loop thread and no handler thread. What the threaded path did must hold:
results, aborts, errors, unserializable responses, a call without a message, cancellation (client cancel,
deadline, server stop) back to the loop; and what it does not take goes to the fallback pool."""

from __future__ import annotations

import concurrent.futures
import logging

import grpc
import pytest

from modelgate.server.frontends.grpc import loop_calls, loop_unary
from modelgate.server.frontends.grpc.loop_calls import LoopCalls
from tests.server.frontends.grpc.grpc_helpers import WAIT_S
from tests.server.frontends.grpc.probe_service import SERVICE, UnaryProbe, loop_on_a_thread, probe_server, unary


class ProbeServicer(UnaryProbe):
    async def Fail(self, request: bytes, context) -> bytes:
        raise RuntimeError(f"the probe fails on {request.decode()}")

    async def Unserializable(self, request: bytes, context) -> object:
        return object()

    async def Metadata(self, request: bytes, context) -> bytes:
        self.mark("metadata")
        return dict(context.invocation_metadata())["probe-key"].encode()


METHODS = ("Echo", "Abort", "Fail", "Unserializable", "Metadata", "Hang")


class RecordingPool(concurrent.futures.ThreadPoolExecutor):
    """The fallback pool: counts the work items it was given."""

    def __init__(self):
        super().__init__(4, thread_name_prefix="probe-fallback")
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


def _serialize(response) -> bytes:
    if not isinstance(response, bytes):
        raise TypeError("not bytes")
    return response


@pytest.fixture
def probe():
    """(servicer, channel, server, fallback pool, loop thread): a threaded server whose probe methods are served
    by LoopCalls on a loop thread; `Threaded` is served by the fallback pool (a plain handler)."""
    with loop_on_a_thread() as (loop, loop_thread):
        servicer = ProbeServicer()
        fallback = RecordingPool()
        calls = LoopCalls(loop, fallback)
        handlers = {}
        for name in METHODS:
            behaviour = calls.unary_handler(_never_threaded, getattr(servicer, name), _serialize)
            handlers[name] = grpc.unary_unary_rpc_method_handler(behaviour, response_serializer=_serialize)
        threaded = _threaded_echo(servicer)
        threaded.experimental_thread_pool = calls  # not one of its handlers: it hands the call to the fallback
        handlers["Threaded"] = grpc.unary_unary_rpc_method_handler(threaded)
        with probe_server(handlers, 4) as (server, channel):
            yield servicer, channel, server, fallback, loop_thread
        fallback.shutdown(wait=False)


def _never_threaded(request, context):
    raise AssertionError("a LoopCalls handler ran on a thread")


def _threaded_echo(servicer: ProbeServicer):
    def handle(request: bytes, context) -> bytes:
        servicer.mark("threaded")
        return request

    return handle


def test_the_installed_grpcio_has_what_the_loop_path_needs():
    assert loop_calls.SUPPORTED  # else every unary RPC of the server falls back to grpc's handler threads


def test_results_come_back_from_coroutines_on_the_loop_with_no_handler_thread(probe):
    servicer, channel, _, fallback, loop_thread = probe
    futures = [unary(channel, "Echo").future(f"ping {i}".encode(), timeout=WAIT_S) for i in range(20)]
    assert [f.result() for f in futures] == [f"ping {i}".encode() for i in range(20)]
    assert servicer.threads == {loop_thread}
    assert fallback.submitted == 0


def test_the_context_is_the_calls(probe):
    _, channel, _, _, _ = probe
    assert unary(channel, "Metadata")(b"", metadata=(("probe-key", "its value"),), timeout=WAIT_S) == b"its value"


def test_an_awaited_abort_ends_the_rpc_with_its_status(probe):
    _, channel, _, _, _ = probe
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Abort")(b"this", timeout=WAIT_S)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "refused this")


def test_an_exception_ends_the_rpc_as_grpcio_ends_it_and_is_logged(probe, caplog):
    _, channel, _, _, _ = probe
    with caplog.at_level(logging.ERROR, logger=loop_unary.__name__), pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Fail")(b"that", timeout=WAIT_S)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert caught.value.details() == "Exception calling application: the probe fails on that"
    assert any("the probe fails on that" in record.getMessage() for record in caplog.records)


def test_a_response_that_cannot_be_serialized_is_an_internal_error(probe):
    _, channel, _, _, _ = probe
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Unserializable")(b"", timeout=WAIT_S)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INTERNAL, "Failed to serialize response!")


def test_a_call_without_a_request_message_is_refused_as_grpcio_refuses_it(probe):
    _, channel, _, _, _ = probe
    with pytest.raises(grpc.RpcError) as caught:
        channel.stream_unary(f"/{SERVICE}/Echo")(iter(()), timeout=WAIT_S)  # half-closes with no message
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == f'"/{SERVICE}/Echo" requires exactly one request message.'


def test_a_deadline_cancels_the_coroutine(probe):
    servicer, channel, _, _, _ = probe
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Hang")(b"deadline", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.wait_for("hang-cancelled-deadline")


def test_a_client_cancel_cancels_the_coroutine_and_the_server_goes_on(probe):
    servicer, channel, _, _, _ = probe
    call = unary(channel, "Hang").future(b"cancel", timeout=WAIT_S)
    assert servicer.wait_for("hang-started-cancel")
    call.cancel()
    assert servicer.wait_for("hang-cancelled-cancel")
    assert unary(channel, "Echo")(b"after", timeout=WAIT_S) == b"after"


def test_stopping_the_server_with_a_call_in_flight_cancels_it_without_hanging(probe):
    servicer, channel, server, _, _ = probe
    call = unary(channel, "Hang").future(b"stop", timeout=WAIT_S)
    assert servicer.wait_for("hang-started-stop")
    assert server.stop(grace=0.2).wait(WAIT_S), "the server did not stop"
    assert servicer.wait_for("hang-cancelled-stop")
    with pytest.raises(grpc.RpcError):
        call.result(timeout=WAIT_S)


def test_a_handler_not_made_by_it_runs_on_the_fallback_pool(probe):
    servicer, channel, _, fallback, _ = probe
    assert unary(channel, "Threaded")(b"plain", timeout=WAIT_S) == b"plain"
    assert servicer.wait_for("threaded")
    assert fallback.submitted == 1
