"""The sequence batcher through a running server, with tritonclient over HTTP and gRPC."""

import queue
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server.scheduling.sequence_models import write_sequence_repository
from tests.server_harness import start_server

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(scope="module")
def sequence_server(tmp_path_factory):
    running = start_server([write_sequence_repository(tmp_path_factory.mktemp("sequences"))])
    clients = {
        "http": httpclient.InferenceServerClient(running.http_url, concurrency=8, network_timeout=60),
        "grpc": grpcclient.InferenceServerClient(running.grpc_url),
    }
    yield running, clients
    for client in clients.values():
        client.close()
    running.stop()


def _inputs(module, value: int, batched: bool = True, rows: int = 1):
    shape = [rows, 1] if batched else [1]
    tensor = module.InferInput("INPUT", shape, "INT32")
    tensor.set_data_from_numpy(np.full(shape, value, np.int32))
    return [tensor]


def _step(clients, protocol, model, sequence_id, value, start=False, end=False, batched=True):
    """One request of a sequence; returns the response."""
    return clients[protocol].infer(
        model,
        _inputs(PROTOCOLS[protocol], value, batched),
        sequence_id=sequence_id,
        sequence_start=start,
        sequence_end=end,
    )


def _run_interleaved(call, steps):
    """Send `steps` [(sequence id, value)] in order, START on each sequence's first, END on its last; returns
    each step's OUTPUT and the running sums expected of them."""
    last = {sequence_id: index for index, (sequence_id, _) in enumerate(steps)}
    seen, sums, got, expected = set(), {}, [], []
    for index, (sequence_id, value) in enumerate(steps):
        start = sequence_id not in seen
        seen.add(sequence_id)
        sums[sequence_id] = (0 if start else sums[sequence_id]) + value
        expected.append(sums[sequence_id])
        got.append(int(call(sequence_id, value, start, last[sequence_id] == index).as_numpy("OUTPUT").item()))
    return got, expected


INTERLEAVED = [(11, 1), (12, 10), (11, 2), (13, 100), (12, 20), (11, 3), (13, 200), (12, 30), (13, 300)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["direct_slot", "oldest"])
def test_interleaved_sequences_get_their_own_sums(sequence_server, protocol, model):
    _, clients = sequence_server

    def call(sequence_id, value, start, end):
        return _step(clients, protocol, model, sequence_id, value, start, end)

    got, expected = _run_interleaved(call, INTERLEAVED)
    assert got == expected
    # Every sequence ended: the same ids start afresh.
    assert int(call(11, 5, True, True).as_numpy("OUTPUT").item()) == 5


def test_string_ids_stick_to_one_instance(sequence_server):
    """Two instances (one slot each) keep sums in their own processes: a sequence that moved to the other
    instance would lose its sum."""
    _, clients = sequence_server
    steps = [("a", 1), ("b", 2)] * 4

    def call(sequence_id, value, start, end):
        return _step(clients, "http", "string_ids", sequence_id, value, start, end, batched=False)

    got, expected = _run_interleaved(call, steps)
    assert got == expected


def test_oldest_batches_requests_of_different_sequences(sequence_server):
    running, clients = sequence_server
    client = clients["http"]
    sums = {}
    for step in range(3):
        pending = []
        for sequence_id in (31, 32, 33):
            value = sequence_id * (step + 1)
            sums[sequence_id] = sums.get(sequence_id, 0) + value
            pending.append(
                (
                    sequence_id,
                    client.async_infer(
                        "oldest_batched",
                        _inputs(httpclient, value),
                        sequence_id=sequence_id,
                        sequence_start=step == 0,
                        sequence_end=step == 2,
                    ),
                )
            )
        for sequence_id, request in pending:
            result = request.get_result()
            assert result.as_numpy("OUTPUT").item() == sums[sequence_id]
            assert result.as_numpy("BATCH").item() == 3  # the preferred size: one request of each sequence
    stats = client.get_inference_statistics("oldest_batched")["model_stats"][0]
    assert (stats["inference_count"], stats["execution_count"]) == (9, 3)
    assert stats["inference_stats"]["success"]["count"] == 9
    metrics = urllib.request.urlopen(running.metrics_url, timeout=10).read().decode()
    assert _metric(metrics, "nv_inference_count", "oldest_batched") == 9
    assert _metric(metrics, "nv_inference_exec_count", "oldest_batched") == 3


def _metric(text: str, family: str, model: str) -> float:
    for line in text.splitlines():
        if line.startswith(family + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{family} of {model} not found")


def test_direct_pads_free_slots_below_the_highest_one(sequence_server):
    """Slots 0 and 1 taken, 0 freed: the request of slot 1 runs at batch position 1 after a READY=false row."""
    _, clients = sequence_server
    _step(clients, "http", "direct_slot", 21, 1, start=True)
    _step(clients, "http", "direct_slot", 22, 5, start=True)
    _step(clients, "http", "direct_slot", 21, 1, end=True)
    result = _step(clients, "http", "direct_slot", 22, 6, end=True)
    assert result.as_numpy("OUTPUT").item() == 11  # the sum kept at batch position 1
    assert (result.as_numpy("BATCH").item(), result.as_numpy("READY_ROWS").item()) == (2, 1)
    assert result.as_numpy("ENDS").item() == 1.0  # END's fp32 true value


@pytest.mark.parametrize("protocol,ids", [("http", (41, 42)), ("grpc", (43, 44))])
def test_idle_sequence_is_released_and_its_next_request_refused(sequence_server, protocol, ids):
    """The model has one slot: the second sequence's START waits until the first is released as idle."""
    _, clients = sequence_server
    first, second = ids
    _step(clients, protocol, "idle", first, 1, start=True)
    assert _step(clients, protocol, "idle", second, 7, start=True).as_numpy("OUTPUT").item() == 7
    with pytest.raises(InferenceServerException) as refused:
        _step(clients, protocol, "idle", first, 1)
    message = str(refused.value)
    assert "must specify the START flag on the first request of the sequence" in message
    assert "idle longer than max_sequence_idle_microseconds (300000)" in message


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_implicit_state_carries_across_requests(sequence_server, protocol):
    _, clients = sequence_server

    def call(sequence_id, value, start=False, end=False):
        return int(_step(clients, protocol, "stateful", sequence_id, value, start, end).as_numpy("OUTPUT").item())

    assert call(51, 1, start=True) == 101  # the initial state, from initial_state/hundred.bin
    assert call(52, 5, start=True) == 105
    assert call(51, 2) == 103
    assert call(52, 5, end=True) == 110
    assert call(51, 3, end=True) == 106
    assert call(51, 1, start=True, end=True) == 101  # a new sequence starts from the initial state again


def test_a_failed_request_leaves_the_state_as_it_was(sequence_server):
    _, clients = sequence_server
    assert _step(clients, "http", "stateful", 53, 1, start=True).as_numpy("OUTPUT").item() == 101
    with pytest.raises(InferenceServerException, match="INPUT must be >= 0"):
        _step(clients, "http", "stateful", 53, -1)
    assert _step(clients, "http", "stateful", 53, 2, end=True).as_numpy("OUTPUT").item() == 103
    stats = clients["http"].get_inference_statistics("stateful")["model_stats"][0]["inference_stats"]
    assert stats["fail"]["count"] == 1


REFUSED = [
    ("plain", {"sequence_id": 5, "sequence_start": True}, "is not a sequence model"),
    ("oldest", {}, "must specify a non-zero or non-empty correlation ID"),
    ("oldest", {"sequence_id": 987654}, "must specify the START flag"),
    ("oldest", {"sequence_id": "text", "sequence_start": True}, "must be an unsigned integer"),
    ("string_ids", {"sequence_id": 17, "sequence_start": True}, "must be a string"),
    ("oldest", {"sequence_id": 18, "sequence_start": True, "priority": 1}, "'priority' is not supported"),
]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model,parameters,fragment", REFUSED)
def test_requests_the_sequence_rules_refuse(sequence_server, protocol, model, parameters, fragment):
    _, clients = sequence_server
    batched = model != "string_ids"
    with pytest.raises(InferenceServerException) as refused:
        clients[protocol].infer(model, _inputs(PROTOCOLS[protocol], 1, batched), **parameters)
    assert fragment in str(refused.value)
    assert refused.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert _step(clients, protocol, "oldest", 61, 4, start=True, end=True).as_numpy("OUTPUT").item() == 4


def test_batch_of_two_is_refused(sequence_server):
    _, clients = sequence_server
    with pytest.raises(InferenceServerException, match="must specify batch-size 1"):
        clients["http"].infer("oldest", _inputs(httpclient, 1, rows=2), sequence_id=71, sequence_start=True)


@pytest.mark.parametrize("model", ["direct_slot", "oldest"])
def test_grpc_stream_keeps_each_sequence_in_order(sequence_server, model):
    """Requests of several sequences go out on one stream without waiting for answers."""
    running, _ = sequence_server
    client = grpcclient.InferenceServerClient(running.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    steps = [(81, 1), (82, 10), (81, 2), (82, 20), (81, 3), (82, 30)]
    last = {sequence_id: index for index, (sequence_id, _) in enumerate(steps)}
    for index, (sequence_id, value) in enumerate(steps):
        client.async_stream_infer(
            model,
            _inputs(grpcclient, value),
            request_id=str(index),
            sequence_id=sequence_id,
            sequence_start=index < 2,
            sequence_end=last[sequence_id] == index,
        )
    client.async_stream_infer(model, _inputs(grpcclient, 1), request_id="late", sequence_id=81)  # 81 has ended
    outputs, errors = {}, []
    for _ in range(len(steps) + 1):
        result, error = answers.get(timeout=60)
        if error is not None:
            errors.append(str(error))
        else:
            outputs[result.get_response().id] = int(result.as_numpy("OUTPUT").item())
    client.stop_stream()
    client.close()
    assert outputs == {"0": 1, "1": 10, "2": 3, "3": 30, "4": 6, "5": 60}
    assert len(errors) == 1 and "must specify the START flag" in errors[0]


def test_server_metadata_lists_the_sequence_extension(sequence_server):
    _, clients = sequence_server
    assert "sequence" in clients["http"].get_server_metadata()["extensions"]


def test_unload_forgets_the_sequences_and_a_reload_serves(tmp_path):
    running = start_server([write_sequence_repository(tmp_path)], model_control_mode="explicit", load_model=["oldest"])
    client = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
    try:
        clients = {"http": client}
        assert _step(clients, "http", "oldest", 91, 3, start=True).as_numpy("OUTPUT").item() == 3
        client.unload_model("oldest")
        client.load_model("oldest")
        with pytest.raises(InferenceServerException, match="must specify the START flag"):
            _step(clients, "http", "oldest", 91, 1)
        assert _step(clients, "http", "oldest", 91, 4, start=True).as_numpy("OUTPUT").item() == 4
    finally:
        client.close()
        running.stop()
