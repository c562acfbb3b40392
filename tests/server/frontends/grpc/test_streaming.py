"""ModelStreamInfer: interleaved requests and streams, final flags, errors inside a stream."""

import asyncio

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.server.frontends.grpc.grpc_helpers import (
    WAIT_S,
    A,
    AioStream,
    B,
    SyncStream,
    add_sub_inputs,
    assert_counted,
    assert_repeated,
    by_request_id,
    count_input,
    int32_input,
    repeat_inputs,
)

FP64_DATA = np.array([[1e300, -0.5]], dtype=np.float64)


def assert_add_sub(results) -> None:
    """add_sub is not decoupled: its one response is final."""
    assert len(results) == 1
    assert results[0].is_final
    np.testing.assert_array_equal(results[0].result.as_numpy("OUTPUT0"), A + B)


def test_two_sync_clients_interleave_requests_on_their_streams(grpc_server):
    first, second = SyncStream(grpc_server.grpc_url), SyncStream(grpc_server.grpc_url)
    first.send("counter", count_input(6), request_id="a-count", parameters={"delay_ms": 3})
    second.send("counter", count_input(9), request_id="b-count", parameters={"delay_ms": 2})
    first.send("repeat_int32", repeat_inputs([10, 11, 12]), request_id="a-repeat")
    second.send("thread_sender", count_input(5), request_id="b-thread")
    first.send("repeat_int32", repeat_inputs([]), request_id="a-none")
    first.send("add_sub", add_sub_inputs(A, B), request_id="a-add")
    second.send("repeat_int32", repeat_inputs([-1]), request_id="b-repeat")
    first_results = by_request_id(first.take(6 + 3 + 1))
    second_results = by_request_id(second.take(9 + 5 + 1))
    assert first.close() == [] and second.close() == []

    assert set(first_results) == {"a-count", "a-repeat", "a-add"}  # a-none: zero responses
    assert_counted(first_results["a-count"], 6)
    assert_repeated(first_results["a-repeat"], [10, 11, 12])
    assert_add_sub(first_results["a-add"])
    assert set(second_results) == {"b-count", "b-thread", "b-repeat"}
    assert_counted(second_results["b-count"], 9)
    assert_counted(second_results["b-thread"], 5)
    assert_repeated(second_results["b-repeat"], [-1])


async def test_several_aio_streams_at_once(aio_client):
    streams = [AioStream(aio_client) for _ in range(4)]
    for number, stream in enumerate(streams):
        stream.send("counter", count_input(5 + number), request_id=f"{number}-count", parameters={"delay_ms": 2})
        stream.send("thread_sender", count_input(number), request_id=f"{number}-thread")
        stream.send("repeat_int32", repeat_inputs(range(number, 2 * number)), request_id=f"{number}-repeat")
        stream.send("add_sub", add_sub_inputs(A, B), request_id=f"{number}-add")
        stream.close()
    outcomes = await asyncio.gather(*(stream.rest() for stream in streams))
    for number, outcome in enumerate(outcomes):
        results = by_request_id(outcome)
        assert_counted(results[f"{number}-count"], 5 + number)
        assert_counted(results.get(f"{number}-thread", []), number)
        assert_repeated(results.get(f"{number}-repeat", []), list(range(number, 2 * number)))
        assert_add_sub(results[f"{number}-add"])
        assert len(outcome) == (5 + number) + number + number + 1


def test_empty_final_response_when_asked_for(grpc_server):
    stream = SyncStream(grpc_server.grpc_url)
    options = {"enable_empty_final_response": True}
    stream.send("repeat_int32", repeat_inputs([4, 5]), request_id="two", **options)
    stream.send("repeat_int32", repeat_inputs([]), request_id="none", **options)
    stream.send("add_sub", add_sub_inputs(A, B), request_id="add", **options)
    results = by_request_id(stream.take(3 + 1 + 1))
    assert stream.close() == []

    two = results["two"]
    assert [r.is_final for r in two] == [False, False, True]
    assert_repeated(two[:2], [4, 5])
    assert two[2].is_empty
    assert two[2].result.get_response().model_name == "repeat_int32"
    (none,) = results["none"]
    assert none.is_final and none.is_empty
    assert_add_sub(results["add"])  # the final flag rides on the one response: nothing empty follows


def test_no_empty_final_response_without_the_flag(grpc_server):
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("repeat_int32", repeat_inputs([4, 5]), request_id="two")
    stream.send("repeat_int32", repeat_inputs([]), request_id="none")
    stream.send("counter", count_input(3), request_id="count")
    results = by_request_id(stream.take(2 + 3))
    assert stream.close() == []  # the server ended the stream without anything more
    assert set(results) == {"two", "count"}
    assert_repeated(results["two"], [4, 5])
    assert_counted(results["count"], 3)


def test_final_flag_sent_with_the_last_response(grpc_server):
    """error_response sends OUT=0, an error response, then OUT=1 together with the final flag."""
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("error_response", count_input(0), request_id="e", enable_empty_final_response=True)
    first, error, last = stream.take(3)
    assert stream.close() == []
    assert (first.out(), first.is_final) == (0, False)
    assert error.result is None and "error_response says no" in error.error.message()
    assert (last.out(), last.is_final, last.id) == (1, True, "e")


def test_non_decoupled_models_answer_once_on_a_stream(grpc_server):
    stream = SyncStream(grpc_server.grpc_url)
    text = grpcclient.InferInput("TEXT", [2], "BYTES")
    text.set_data_from_numpy(np.array(["h\u00e9llo".encode(), b""], dtype=np.object_))
    stream.send("string_ops", [text], request_id="text")
    stream.send("add_sub", add_sub_inputs(A, B), request_id="add")
    fp64 = grpcclient.InferInput("INPUT", [1, 2], "FP64")
    fp64.set_data_from_numpy(FP64_DATA)
    stream.send("identity_fp64", [fp64], request_id="fp64")
    results = by_request_id(stream.take(3))
    assert stream.close() == []
    (upper,) = results["text"]
    assert upper.is_final
    assert list(upper.result.as_numpy("UPPER")) == ["H\u00c9LLO".encode(), b""]
    assert list(upper.result.as_numpy("LENGTH")) == [6, 0]
    assert_add_sub(results["add"])
    (identity,) = results["fp64"]
    assert identity.is_final
    np.testing.assert_array_equal(identity.result.as_numpy("OUTPUT"), FP64_DATA)


def test_model_sending_after_execute_returned(grpc_server):
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("thread_sender", count_input(4), request_id="t", enable_empty_final_response=True)
    results = stream.take(5)
    assert stream.close() == []
    assert_counted(results[:4], 4)
    assert all(bool(r.result.as_numpy("AFTER_EXECUTE")[0]) for r in results[:4])
    assert results[4].is_final and results[4].is_empty and results[4].id == "t"


def test_decoupled_model_raising_ends_its_request_with_an_error(grpc_client, grpc_server):
    failures_before = _failure_count(grpc_client, "raise_after")
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("raise_after", count_input(2), request_id="raises")
    *sent, error = stream.take(3)
    assert_counted(sent, 2)
    assert error.result is None
    assert "raise_after" in error.error.message() and "ValueError: raise_after gives up" in error.error.message()
    stream.send("add_sub", add_sub_inputs(A, B), request_id="after")  # the stream goes on
    assert_add_sub(stream.take(1))
    assert stream.close() == []
    assert _failure_count(grpc_client, "raise_after") == failures_before + 1


def _failure_count(client, model: str) -> int:
    return client.get_inference_statistics(model).model_stats[0].inference_stats.fail.count


def test_requests_refused_on_a_stream_leave_it_open(grpc_server):
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("no_such_model", count_input(1), request_id="unknown")
    stream.send("counter", [int32_input("NOT_AN_INPUT", [1])], request_id="bad-input")
    stream.send("broken", [int32_input("X", [1])], request_id="broken")
    stream.send("counter", count_input(2), request_id="good")
    unknown, bad_input, broken, *good = stream.take(3 + 2)
    assert stream.close() == []
    assert "unknown model: 'no_such_model'" in unknown.error.message()
    assert "unexpected inference input 'NOT_AN_INPUT'" in bad_input.error.message()
    assert "broken on purpose" in broken.error.message()
    assert_counted(good, 2)
    assert {r.id for r in good} == {"good"}


def test_a_response_that_cannot_be_encoded_becomes_an_error_of_its_request(grpc_server):
    stream = SyncStream(grpc_server.grpc_url)
    stream.send("odd_parameter", count_input(0), request_id="odd")
    error, last = stream.take(2)
    assert stream.close() == []
    assert "response parameter 'nested' of type dict" in error.error.message()
    assert (last.out(), last.is_final, last.id) == (0, True, "odd")
    assert last.result.get_response().parameters["flat"].int64_param == 1


# -- the raw stream, as clients other than tritonclient read it ------------------------------------


def stream_request(model_name: str, request_id: str, count: int = 0) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model_name, id=request_id)
    request.inputs.add(name="COUNT", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([count], dtype=np.int32).tobytes())
    return request


def raw_stream(grpc_server, requests) -> list[service_pb2.ModelStreamInferResponse]:
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return list(stub.ModelStreamInfer(iter(requests), timeout=WAIT_S))


def final_flag(message: service_pb2.ModelStreamInferResponse) -> bool:
    return message.infer_response.parameters["triton_final_response"].bool_param


def test_stream_errors_name_their_request_as_triton_does(grpc_server):
    messages = raw_stream(
        grpc_server, [stream_request("no_such_model", "unknown"), stream_request("raise_after", "raises")]
    )
    errors = [m for m in messages if m.error_message]
    assert [m.infer_response.id for m in errors] == ["unknown", "raises"]
    assert "unknown model" in errors[0].error_message
    assert errors[1].infer_response.model_name == "raise_after"
    assert all(final_flag(m) for m in errors)  # neither request sends anything more
    assert [m for m in messages if not m.error_message] == []


def test_error_response_mid_stream_keeps_the_final_flag_off(grpc_server):
    first, error, last = raw_stream(grpc_server, [stream_request("error_response", "e")])
    assert (first.error_message, first.infer_response.id, final_flag(first)) == ("", "e", False)
    assert error.error_message == "error_response says no"
    assert (error.infer_response.id, error.infer_response.model_name, final_flag(error)) == (
        "e",
        "error_response",
        False,
    )
    assert (last.infer_response.id, final_flag(last)) == ("e", True)
    assert np.frombuffer(last.infer_response.raw_output_contents[0], np.int32).tolist() == [1]
