"""The sequence stand-ins as Triton's sequence examples drive them, through tritonclient HTTP, gRPC and a gRPC
stream: sequences named by a uint64 or by a string, interleaved, with the START, END and CORRID controls the
batcher adds (direct strategy for simple_sequence, oldest for the dyna models)."""

import queue
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODULES = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(scope="module", params=sorted(MODULES))
def client(request, triton_named_server):
    url = triton_named_server.http_url if request.param == "http" else triton_named_server.grpc_url
    made = MODULES[request.param].InferenceServerClient(url)
    made.protocol = request.param
    yield made
    made.close()


def _inputs(module, value: int):
    tensor = module.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.full((1, 1), value, dtype=np.int32))
    return [tensor]


def _step(client, model: str, value: int, sequence_id, start=False, end=False) -> int:
    result = client.infer(
        model,
        _inputs(MODULES[client.protocol], value),
        sequence_id=sequence_id,
        sequence_start=start,
        sequence_end=end,
    )
    return int(result.as_numpy("OUTPUT").item())


def _interleave(client, model: str, sequences: dict, values: dict) -> dict:
    """Sends the sequences' values one request at a time, taking turns; returns each sequence's outputs."""
    outputs = {sequence_id: [] for sequence_id in sequences}
    length = len(next(iter(values.values())))
    for index in range(length):
        for sequence_id in sequences:
            value = values[sequence_id][index]
            output = _step(client, model, value, sequence_id, start=index == 0, end=index == length - 1)
            outputs[sequence_id].append(output)
    return outputs


@pytest.mark.parametrize("ids", [(1000, 1001), (str(uuid.uuid4()), 1001)], ids=["uint64", "string"])
def test_simple_sequence_adds_one_on_start_only(client, ids):
    values = {ids[0]: [0, 11, 7, 1], ids[1]: [100, -11, -7, -1]}
    outputs = _interleave(client, "simple_sequence", ids, values)
    assert outputs == {ids[0]: [1, 11, 7, 1], ids[1]: [101, -11, -7, -1]}


def test_simple_dyna_sequence_adds_the_correlation_id_on_end(client):
    values = {2000: [0, 11, 5, 1], 2001: [100, -11, -5, -1]}
    outputs = _interleave(client, "simple_dyna_sequence", (2000, 2001), values)
    assert outputs == {2000: [1, 11, 5, 2001], 2001: [101, -11, -5, 2000]}


def test_simple_dyna_sequence_refuses_a_string_id(client):
    with pytest.raises(InferenceServerException) as raised:
        _step(client, "simple_dyna_sequence", 1, "2002", start=True)
    assert "must be an unsigned integer" in raised.value.message()
    assert raised.value.status() == ("400" if client.protocol == "http" else "StatusCode.INVALID_ARGUMENT")


def test_string_dyna_sequence_sums_by_string_id_and_adds_it_on_end(client):
    values = {"1002": [20, -11, -7, -1], "40": [5, 6, 7, 8]}
    outputs = _interleave(client, "simple_string_dyna_sequence", ("1002", "40"), values)
    assert outputs == {"1002": [20, 9, 2, 1 + 1002], "40": [5, 11, 18, 26 + 40]}


def test_string_dyna_sequence_restarts_its_sum_on_start(client):
    _step(client, "simple_string_dyna_sequence", 50, "7", start=True)
    assert _step(client, "simple_string_dyna_sequence", 3, "7", start=True) == 3
    assert _step(client, "simple_string_dyna_sequence", 4, "7", end=True) == 3 + 4 + 7


def _stream_sequences(client, model: str, values: dict) -> dict:
    """Sends every request of every sequence on one stream without waiting (as Triton's stream examples do) and
    returns each sequence's outputs in the order they came back."""
    responses = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put(error or result))
    try:
        for sequence_id, sequence_values in values.items():
            for index, value in enumerate(sequence_values):
                client.async_stream_infer(
                    model,
                    _inputs(grpcclient, value),
                    request_id=f"{sequence_id}_{index}",
                    sequence_id=sequence_id,
                    sequence_start=index == 0,
                    sequence_end=index == len(sequence_values) - 1,
                )
        outputs = {str(sequence_id): [] for sequence_id in values}
        for _ in range(sum(len(sequence_values) for sequence_values in values.values())):
            result = responses.get(timeout=60)
            assert not isinstance(result, InferenceServerException), result
            sequence_id = result.get_response().id.rsplit("_", 1)[0]
            outputs[sequence_id].append(int(result.as_numpy("OUTPUT").item()))
    finally:
        client.stop_stream()
    return outputs


def test_a_stream_keeps_each_sequences_order_under_both_strategies(triton_named_server):
    client = grpcclient.InferenceServerClient(triton_named_server.grpc_url)
    string_id = str(uuid.uuid4())
    try:
        direct = _stream_sequences(client, "simple_sequence", {3000: [0, 11, 7], string_id: [20, -11, -7]})
        oldest = _stream_sequences(client, "simple_string_dyna_sequence", {"3001": [1, 2, 3], "9": [4, 5, 6]})
    finally:
        client.close()
    assert direct == {"3000": [1, 11, 7], string_id: [21, -11, -7]}
    assert oldest == {"3001": [1, 3, 6 + 3001], "9": [4, 9, 15 + 9]}
