"""Stopping a server while a ModelStreamInfer stream is open: the stop neither hangs nor waits for the
stream past its grace, the client sees its stream end, and the model sees the cancellation."""

import threading

from tests.server.frontends.grpc.grpc_helpers import WAIT_S, SyncStream, assert_counted, count_input, wait_for_file
from tests.server.frontends.grpc.stream_models import COUNTER_MODEL, STREAM_CONFIG
from tests.server_harness import start_server, write_model

# Ten times longer than the stop's grace (--exit-timeout-secs 1): only the stop ends it early.
LONG_COUNT = 1000
LONG_DELAY_MS = 10


def test_stopping_the_server_with_a_stream_open_ends_the_stream(tmp_path):
    repository = tmp_path / "models"
    write_model(repository, "counter", STREAM_CONFIG.format(name="counter", extra_output=""), COUNTER_MODEL)
    running = start_server([repository], exit_timeout_secs=1)
    stream = SyncStream(running.grpc_url)
    record = tmp_path / "cancelled.json"
    parameters = {"delay_ms": LONG_DELAY_MS, "record_path": str(record)}
    stream.send("counter", count_input(LONG_COUNT), request_id="open", parameters=parameters)
    assert_counted(stream.take(2), 2)  # the stream is open and the model is streaming; no half-close

    stopper = threading.Thread(target=running.stop, name="stop-server")
    stopper.start()
    stopper.join(timeout=3 * WAIT_S)
    assert not stopper.is_alive(), "stopping the server hung on the open stream"

    rest = stream.close()
    assert rest and rest[-1].error is not None, "the client's stream did not end with an error"
    assert len(rest) < LONG_COUNT
    seen = wait_for_file(record)
    assert seen["cancelled"] is True
    assert seen["sent"] < LONG_COUNT
