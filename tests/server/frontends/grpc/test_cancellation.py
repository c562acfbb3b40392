"""Cancelling a stream while its model streams: the model sees it, other streams do not, state is clean."""

import asyncio
import time

from tests.server.frontends.grpc.grpc_helpers import (
    WAIT_S,
    AioStream,
    SyncStream,
    assert_counted,
    assert_repeated,
    by_request_id,
    count_input,
    metric_value,
    repeat_inputs,
    wait_for_file,
)

# Long enough that only a cancellation ends it early (500 x 10 ms).
LONG_COUNT = 500
LONG_DELAY_MS = 10


def wait_until_idle(grpc_server, model: str) -> None:
    """Poll the pending-request gauge until it is back to 0 (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while metric_value(grpc_server.metrics_url, "nv_inference_pending_request_count", model) != 0:
        assert time.monotonic() < deadline, f"requests of '{model}' still pending after {WAIT_S} s"
        time.sleep(0.02)


def execution_count(client, model: str) -> int:
    return client.get_inference_statistics(model).model_stats[0].execution_count


async def test_cancelling_an_aio_stream_cancels_its_requests_only(aio_client, grpc_client, grpc_server, tmp_path):
    executions_before = execution_count(grpc_client, "counter")
    record = tmp_path / "cancelled.json"
    doomed = AioStream(aio_client)
    doomed.send(
        "counter",
        count_input(LONG_COUNT),
        request_id="long",
        parameters={"delay_ms": LONG_DELAY_MS, "record_path": str(record)},
    )
    others = [AioStream(aio_client) for _ in range(2)]
    others[0].send("counter", count_input(40), request_id="other-count", parameters={"delay_ms": 2})
    others[1].send("repeat_int32", repeat_inputs(range(20), delay_ms=2), request_id="other-repeat")
    others[1].send("thread_sender", count_input(7), request_id="other-thread")

    started = await doomed.take(3)
    assert_counted(started, 3)
    doomed.cancel()
    for stream in others:
        stream.close()
    outcomes = await asyncio.gather(*(stream.rest() for stream in others))

    seen = await asyncio.to_thread(wait_for_file, record)
    assert seen["cancelled"] is True
    assert 3 <= seen["sent"] < LONG_COUNT
    assert_counted(by_request_id(outcomes[0])["other-count"], 40)
    completed = by_request_id(outcomes[1])
    assert_repeated(completed["other-repeat"], list(range(20)))
    assert_counted(completed["other-thread"], 7)

    await asyncio.to_thread(wait_until_idle, grpc_server, "counter")
    assert execution_count(grpc_client, "counter") == executions_before + 2
    after = AioStream(aio_client)
    after.send("counter", count_input(3), request_id="after")
    after.close()
    assert_counted(by_request_id(await after.rest())["after"], 3)


def test_stop_stream_with_cancel_requests_cancels_the_model(grpc_client, grpc_server, tmp_path):
    record = tmp_path / "cancelled.json"
    stream = SyncStream(grpc_server.grpc_url)
    stream.send(
        "counter",
        count_input(LONG_COUNT),
        request_id="long",
        parameters={"delay_ms": LONG_DELAY_MS, "record_path": str(record)},
    )
    assert_counted(stream.take(2), 2)
    stream.close(cancel_requests=True)

    seen = wait_for_file(record)
    assert seen["cancelled"] is True
    assert 2 <= seen["sent"] < LONG_COUNT
    wait_until_idle(grpc_server, "counter")
    fresh = SyncStream(grpc_server.grpc_url)
    fresh.send("counter", count_input(4), request_id="fresh")
    assert_counted(fresh.take(4), 4)
    assert fresh.close() == []


def test_closing_a_stream_without_cancelling_lets_requests_finish(grpc_server, tmp_path):
    record = tmp_path / "finished.json"
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("counter", count_input(30), request_id="whole", parameters={"delay_ms": 2, "record_path": str(record)})
    assert_counted(stream.take(1), 1)
    rest = stream.close()  # half-closes; the server still answers what was sent
    assert [r.out() for r in rest] == list(range(1, 30))
    assert wait_for_file(record) == {"cancelled": False, "sent": 30}
