"""An LLM engine that dies: its requests fail naming the model, the model is not ready meanwhile, and a new
engine serves again (counted in statistics and a metric); other models never notice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests
import tritonclient.http as httpclient

from tests.backends.llm.serving.helpers import (
    LONG,
    MODEL,
    WAIT_S,
    GrpcStream,
    generate,
    greedy_sampling,
    server_metrics,
    wait_for,
)
from tests.server_harness import copy_example_model, start_server


@pytest.fixture
def own_server(server, checkpoint, tmp_path):
    """A server of its own (the package's `server` fixture wrote the model's config): its engine is killed."""
    copy_example_model(tmp_path, "add_sub")
    running = start_server([checkpoint.parent.parent, tmp_path])
    yield running
    running.stop()


def _llm_instance(running):
    serving = running.server.manager._entries[MODEL].serving[1]
    return serving.scheduler.pool._instances[0]


def _model_ready(running) -> bool:
    return requests.get(f"http://{running.http_url}/v2/models/{MODEL}/ready", timeout=WAIT_S).status_code == 200


@pytest.fixture
def held_restarts(own_server, monkeypatch):
    """The supervisor's next engine starts only once the yielded event is set (at the latest when the test
    ends): a tiny engine starts again in about a second, and on a loaded machine that came before a test's
    checks of the down state."""
    instance = _llm_instance(own_server)
    gate = threading.Event()
    start_engine = instance.engines._start_engine

    def held(on_exit):
        gate.wait(3 * WAIT_S)
        return start_engine(on_exit)

    monkeypatch.setattr(instance.engines, "_start_engine", held)
    yield gate
    gate.set()


def test_a_killed_engine_fails_its_requests_and_comes_back(own_server, held_restarts):
    instance = _llm_instance(own_server)
    pid = instance.engines.client.process.pid
    os.kill(pid, signal.SIGSTOP)  # frozen: the request below is certainly still in the engine when it dies
    stream = GrpcStream(own_server.grpc_url, MODEL)
    try:
        stream.send("doomed", "hello", greedy_sampling(LONG))
        wait_for(lambda: instance._active, "the request to reach the engine")
        os.kill(pid, signal.SIGKILL)
        result, error = stream.next()
        assert result is None
        assert f"model '{MODEL}'" in str(error) and "killed by signal 9" in str(error)
    finally:
        stream.close()

    # Down: the model is not ready and says why; the server is not ready (strict readiness); add_sub serves.
    assert not _model_ready(own_server)
    refused = generate(own_server, "hello", 4)
    assert refused.status_code == 503 and f"model '{MODEL}'" in refused.json()["error"]
    assert requests.get(f"http://{own_server.http_url}/v2/health/ready", timeout=WAIT_S).status_code == 400
    _assert_add_sub_serves(own_server)

    held_restarts.set()
    wait_for(lambda: _model_ready(own_server), "the engine to start again")
    assert instance.engines.client.process.pid != pid
    assert generate(own_server, "hello", 4).json()["num_output_tokens"] == 4
    statistics = requests.get(f"http://{own_server.http_url}/v2/models/{MODEL}/stats", timeout=WAIT_S).json()
    assert statistics["model_stats"][0]["instance_restarts"] == 1
    assert server_metrics(own_server)["modelgate_llm_engine_restarts_total"] == 1
    assert requests.get(f"http://{own_server.http_url}/v2/health/ready", timeout=WAIT_S).status_code == 200


def test_unloading_while_down_stops_the_restarts(own_server):
    instance = _llm_instance(own_server)
    os.kill(instance.engines.client.process.pid, signal.SIGKILL)
    wait_for(lambda: instance.engines.client is None and instance.engines.down_reason, "the engine to be seen dead")
    instance.unload()
    time.sleep(1.5)  # past the first back-off: a restart would have begun by now
    assert instance.engines.client is None
    _assert_add_sub_serves(own_server)


STREAMS = {  # route, body, the error of an event
    "generate_stream": (
        f"/v2/models/{MODEL}/generate_stream",
        {"text_input": "hello", "sampling_parameters": greedy_sampling(LONG), "stream": True},
        lambda event: event["error"],
    ),
    "completions": (
        "/v1/completions",
        {"model": MODEL, "prompt": "hello", "max_tokens": LONG, "stream": True, "temperature": 0, "ignore_eos": True},
        lambda event: event["error"]["message"],
    ),
}


@pytest.mark.parametrize("route", STREAMS)
def test_an_engine_dying_mid_stream_ends_the_stream_with_an_error_event(own_server, route):
    """Tokens written through as they come, then the engine dies: the client still gets every token sent
    before, then an error event naming the model."""
    instance = _llm_instance(own_server)
    path, body, error_of = STREAMS[route]
    pid = instance.engines.client.process.pid
    with requests.post(f"http://{own_server.http_url}{path}", json=body, stream=True, timeout=WAIT_S) as response:
        lines = response.iter_lines()
        first = json.loads(next(line for line in lines if line)[len(b"data: ") :])
        assert "error" not in first
        os.kill(pid, signal.SIGKILL)
        events = [line[len(b"data: ") :] for line in lines if line]
    if route == "completions":
        assert events.pop() == b"[DONE]"
    events = [json.loads(event) for event in events]
    assert all("error" not in event for event in events[:-1])  # the tokens generated before it died
    assert f"model '{MODEL}'" in error_of(events[-1]) and "killed by signal 9" in error_of(events[-1])
    wait_for(lambda: _model_ready(own_server), "the engine to start again")


def _assert_add_sub_serves(running) -> None:
    import numpy as np

    client = httpclient.InferenceServerClient(running.http_url)
    try:
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = httpclient.InferInput(name, [4], "FP32")
            tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
            inputs.append(tensor)
        result = client.infer("add_sub", inputs)
        assert result.as_numpy("OUTPUT0").tolist() == [2.0] * 4
    finally:
        client.close()
