"""--http-workers and gRPC: the workers share the gRPC port too, serve LLM streams (ModelStreamInfer) themselves
and send every other call, and every other request of a stream, to the server.

Each check opens a client of its own (a new channel, so a new connection: the kernel gives it to any of the
processes) and checks every answer: whichever process took the connection, the answer is the server's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from modelgate.server.frontend_workers.control_messages import REPORT_INTERVAL_S
from tests.backends.llm.serving.fixtures import checkpoint, reference  # noqa: F401  (fixtures)
from tests.backends.llm.serving.helpers import (
    LONG,
    MODEL,
    GrpcStream,
    greedy_sampling,
    is_final,
    metric_delta,
    server_metrics,
    text_output,
    wait_server_idle,
)
from tests.server.frontend_workers.workers_harness import (
    NUM_REQUESTS,
    own_first_tokens,
    start_workers_server,
    wait_for,
)
from tests.server_harness import copy_example_model, start_server

ADD_SUB_INPUTS = np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)


@pytest.fixture(scope="module")
def workers_server(checkpoint, tmp_path_factory):  # noqa: F811  (the fixture imported above)
    running = start_workers_server(checkpoint, tmp_path_factory.mktemp("tensor_models"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def primary_url(workers_server) -> str:
    """The server's own gRPC service (its Unix socket, where workers forward): what a worker must answer."""
    return f"unix:{workers_server.server._sharing.socket_dir / 'grpc.sock'}"


def _add_sub_inputs() -> list:
    inputs = [grpcclient.InferInput(f"INPUT{i}", [4], "FP32") for i in range(2)]
    for tensor, values in zip(inputs, ADD_SUB_INPUTS):
        tensor.set_data_from_numpy(values)
    return inputs


def _assert_add_sub(result) -> None:
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ADD_SUB_INPUTS[0] + ADD_SUB_INPUTS[1])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), ADD_SUB_INPUTS[0] - ADD_SUB_INPUTS[1])


def _inference_count(url: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        return client.get_inference_statistics(MODEL).model_stats[0].inference_count


def _refusal(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as refused:
        call()
    return refused.value.status(), refused.value.message()


def test_llm_streams_spread_over_the_processes_and_are_counted_once(workers_server, reference):  # noqa: F811
    url = workers_server.grpc_url
    before_count, before_own = _inference_count(url), own_first_tokens()
    expected = reference.greedy(reference.prompt_ids("quick brown"), 5)
    for index in range(NUM_REQUESTS):
        stream = GrpcStream(url, MODEL)  # a client of its own
        stream.send(f"r{index}", "quick brown", greedy_sampling(5))
        results = stream.collect({f"r{index}"})[f"r{index}"]
        stream.close()
        assert "".join(text_output(result) for result in results) == expected.text
    assert own_first_tokens() - before_own < NUM_REQUESTS  # the workers served the rest
    # Statistics are the server's, the workers' counts added within a report or two, whoever answers.
    wait_for(lambda: _inference_count(url) - before_count == NUM_REQUESTS, "the workers' counts")
    assert {_inference_count(url) for _ in range(NUM_REQUESTS // 2)} == {before_count + NUM_REQUESTS}


def test_calls_are_answered_as_the_server_answers(workers_server, primary_url):
    with grpcclient.InferenceServerClient(primary_url) as primary:
        expected_metadata = primary.get_model_metadata(MODEL, as_json=True)
        expected_index = primary.get_model_repository_index(as_json=True)
        expected_server = primary.get_server_metadata(as_json=True)
    assert {model["name"] for model in expected_index["models"]} == {MODEL, "add_sub"}  # a worker knows only MODEL
    for _ in range(NUM_REQUESTS):
        with grpcclient.InferenceServerClient(workers_server.grpc_url) as client:
            _assert_add_sub(client.infer("add_sub", _add_sub_inputs()))
            assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
            assert client.get_model_metadata(MODEL, as_json=True) == expected_metadata
            assert client.get_model_repository_index(as_json=True) == expected_index
            assert client.get_server_metadata(as_json=True) == expected_server


def test_errors_carry_the_servers_code_and_message(workers_server, primary_url):
    def refusals(url: str) -> list[tuple[str, str]]:
        with grpcclient.InferenceServerClient(url) as client:
            return [
                _refusal(lambda: client.get_model_metadata("nope")),
                _refusal(lambda: client.infer("nope", _add_sub_inputs())),
                _refusal(lambda: client.infer(MODEL, _add_sub_inputs())),  # the LLM's inputs are others
            ]

    expected = refusals(primary_url)
    assert all("nope" in message for _, message in expected[:2])
    for _ in range(NUM_REQUESTS // 2):
        assert refusals(workers_server.grpc_url) == expected


def test_one_stream_carries_requests_for_the_llm_and_for_other_models(workers_server, reference):  # noqa: F811
    """The LLM's requests are served by the process the stream reached, the others by the server (through the
    worker, if a worker took it): every request gets its responses, in order, on the one stream."""
    expected = reference.greedy(reference.prompt_ids("the lazy dog"), 4)
    before_own = own_first_tokens()
    for _ in range(NUM_REQUESTS):
        stream = GrpcStream(workers_server.grpc_url, MODEL)
        stream.client.async_stream_infer("add_sub", _add_sub_inputs(), request_id="first")
        stream.send("llm", "the lazy dog", greedy_sampling(4))
        stream.client.async_stream_infer("add_sub", _add_sub_inputs(), request_id="second")
        stream.client.async_stream_infer("nope", _add_sub_inputs(), request_id="unknown")
        results, error = _collect_with_one_error(stream, {"first", "llm", "second"})
        stream.close()
        assert "nope" in error.message()
        assert "".join(text_output(result) for result in results["llm"]) == expected.text
        for request_id in ("first", "second"):
            assert len(results[request_id]) == 1
            _assert_add_sub(results[request_id][0])
    assert own_first_tokens() - before_own < NUM_REQUESTS  # some streams were split by a worker


def _collect_with_one_error(stream: GrpcStream, request_ids: set[str]):
    results: dict[str, list] = {request_id: [] for request_id in request_ids}
    unfinished, errors = set(request_ids), []
    while unfinished or not errors:
        result, error = stream.next()
        if error is not None:
            errors.append(error)
            continue
        results[result.get_response().id].append(result)
        if is_final(result):
            unfinished.discard(result.get_response().id)
    assert len(errors) == 1
    return results, errors[0]


def test_a_cancelled_stream_frees_the_engine_whichever_process_served_it(workers_server, reference):  # noqa: F811
    prompt_tokens = len(reference.prompt_ids("hello"))
    before_own = own_first_tokens()
    before = _settled_metrics(workers_server)  # the earlier tests' last reports in
    for _ in range(NUM_REQUESTS):
        stream = GrpcStream(workers_server.grpc_url, MODEL)
        stream.send("long", "hello", greedy_sampling(LONG))
        result, error = stream.next()
        assert error is None and not is_final(result)
        stream.close(cancel=True)
        # A request's tokens are counted when it ends, by the process that served it (a worker's reach the
        # server with its next report): once the prompt is, its generated tokens are too.
        wait_for(lambda before=before: _prompt_tokens_since(workers_server, before) >= prompt_tokens, "the end")
        assert _prompt_tokens_since(workers_server, before) == prompt_tokens
        after = wait_server_idle(workers_server)
        assert 1 <= metric_delta(before, after, "modelgate_llm_generation_tokens_total") < LONG
        before = after
    assert own_first_tokens() - before_own < NUM_REQUESTS  # some were the workers'


def _prompt_tokens_since(running, before: dict) -> float:
    return metric_delta(before, server_metrics(running), "modelgate_llm_prompt_tokens_total")


def _settled_metrics(running) -> dict:
    """The LLM metrics once the engine is idle and no worker's report changes them any more."""
    previous = None
    while (metrics := wait_server_idle(running)) != previous:
        previous = metrics
        time.sleep(2 * REPORT_INTERVAL_S)
    return metrics


def test_workers_serve_grpc_without_http(tmp_path):
    copy_example_model(tmp_path, "add_sub")
    running = start_server([tmp_path], http_workers=2, allow_http=False)
    try:
        assert running.server.http_port is None and len(running.server.workers._workers) == 1
        for _ in range(NUM_REQUESTS // 2):
            with grpcclient.InferenceServerClient(running.grpc_url) as client:
                _assert_add_sub(client.infer("add_sub", _add_sub_inputs()))
    finally:
        running.stop()
