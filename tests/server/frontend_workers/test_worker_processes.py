"""--http-workers: several processes on one HTTP port, one engine per LLM model.

The kernel spreads connections over the processes (SO_REUSEPORT), so each test sends its requests on
connections of their own (`requests.post` without a session) and checks every answer: whichever process got
it, the answer is the server's. That the workers served some of them is read from the server process's own
LLM metrics (in this process: the server runs in the test's), which count only what it served itself.
"""

from __future__ import annotations

import gzip
import json
import os
import signal

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from tests.backends.llm.serving.fixtures import checkpoint, reference  # noqa: F401  (fixtures)
from tests.backends.llm.serving.helpers import MODEL, WAIT_S
from tests.server.frontend_workers.workers_harness import (
    NUM_REQUESTS,
    own_first_tokens,
    start_workers_server,
    table_published,
    wait_for,
)
from tests.server_harness import copy_example_model, start_server


@pytest.fixture(scope="module")
def workers_server(checkpoint, tmp_path_factory):  # noqa: F811  (the fixture imported above)
    running = start_workers_server(checkpoint, tmp_path_factory.mktemp("tensor_models"))
    yield running
    running.stop()


def _stats(running) -> dict:
    url = f"http://{running.http_url}/v2/models/{MODEL}/stats"
    return requests.get(url, timeout=WAIT_S).json()["model_stats"][0]


def _metric(running, name: str) -> float:
    text = requests.get(running.metrics_url, timeout=WAIT_S).text
    line = next(line for line in text.splitlines() if line.startswith(f'{name}{{model="{MODEL}",version="1"}}'))
    return float(line.rsplit(" ", 1)[1])


def _stream_events(running, prompt: str, max_tokens: int) -> list[dict]:
    sampling = json.dumps({"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True})
    body = {"text_input": prompt, "sampling_parameters": sampling, "exclude_input_in_output": True}
    url = f"http://{running.http_url}/v2/models/{MODEL}/generate_stream"
    response = requests.post(url, json=body, timeout=WAIT_S)
    assert response.status_code == 200, response.text
    return [json.loads(line[len("data: ") :]) for line in response.text.split("\n\n") if line.startswith("data: ")]


def test_streams_spread_over_the_processes_and_are_counted_once(workers_server, reference):  # noqa: F811
    before_stats, before_own = _stats(workers_server)["inference_count"], own_first_tokens()
    before_metric = _metric(workers_server, "modelgate_llm_time_to_first_token_seconds_count")
    expected = reference.greedy(reference.prompt_ids("quick brown"), 5)
    for _ in range(NUM_REQUESTS):
        events = _stream_events(workers_server, "quick brown", 5)
        assert "".join(event["text_output"] for event in events) == expected.text
        assert events[-1]["finish_reason"] == "length"
    served_here = own_first_tokens() - before_own
    assert served_here < NUM_REQUESTS  # the workers served the rest
    # What the workers did reaches the server's statistics and metrics within a report or two.
    wait_for(lambda: _stats(workers_server)["inference_count"] - before_stats == NUM_REQUESTS, "statistics")
    wait_for(
        lambda: (
            _metric(workers_server, "modelgate_llm_time_to_first_token_seconds_count") - before_metric == NUM_REQUESTS
        ),
        "the workers' first-token latencies in /metrics",
    )


def test_tensor_models_are_served_through_any_process(workers_server):
    client_inputs = np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    for compression in (None, "gzip") * (NUM_REQUESTS // 2):
        with httpclient.InferenceServerClient(workers_server.http_url) as client:  # a connection of its own
            inputs = [httpclient.InferInput(f"INPUT{i}", [4], "FP32") for i in range(2)]
            for tensor, values in zip(inputs, client_inputs):
                tensor.set_data_from_numpy(values, binary_data=True)
            result = client.infer("add_sub", inputs, request_compression_algorithm=compression)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), client_inputs[0] + client_inputs[1])
            assert client.is_model_ready(MODEL)
            assert client.get_model_metadata("add_sub")["platform"] == "python"


def test_errors_are_the_servers_whichever_process_answers(workers_server):
    url = f"http://{workers_server.http_url}"
    for _ in range(NUM_REQUESTS // 2):
        missing = requests.post(f"{url}/v2/models/nope/generate_stream", json={"text_input": "x"}, timeout=WAIT_S)
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        bad = requests.post(f"{url}/v2/models/{MODEL}/generate_stream", data=b"{not json", timeout=WAIT_S)
        assert bad.status_code == 400 and "error" in bad.json()
        openai = requests.post(f"{url}/v1/completions", json={"model": "nope", "prompt": "x"}, timeout=WAIT_S)
        assert openai.status_code == 404 and "nope" in openai.json()["error"]["message"]


def test_openai_streams_through_any_process(workers_server, reference):  # noqa: F811
    expected = reference.greedy(reference.prompt_ids("the lazy dog"), 4)
    body = {"model": MODEL, "prompt": "the lazy dog", "max_tokens": 4, "temperature": 0, "stream": True}
    body["ignore_eos"] = True
    compressed = gzip.compress(json.dumps(body).encode())
    for data, headers in [(json.dumps(body).encode(), {})] * 4 + [(compressed, {"Content-Encoding": "gzip"})] * 4:
        headers = {"Content-Type": "application/json", **headers}
        url = f"http://{workers_server.http_url}/v1/completions"
        response = requests.post(url, data=data, headers=headers, timeout=WAIT_S)
        assert response.status_code == 200, response.text
        chunks = [line[len("data: ") :] for line in response.text.split("\n\n") if line.startswith("data: ")]
        assert chunks[-1] == "[DONE]"
        text = "".join(c["text"] for chunk in chunks[:-1] for c in json.loads(chunk)["choices"])
        assert text == expected.text


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(workers_server):
    pool = workers_server.server.workers
    victim = pool._workers[0]
    os.kill(victim.process.pid, signal.SIGKILL)
    # Connections the dying worker had accepted go with it (their clients see a reset, as with any crash);
    # once it is gone, its socket has left the port's group and the others take every new connection.
    victim.process.join(WAIT_S)
    for _ in range(NUM_REQUESTS):
        assert requests.get(f"http://{workers_server.http_url}/v2/health/ready", timeout=WAIT_S).status_code == 200
    wait_for(lambda: pool._workers[0] is not victim and pool._workers[0].process.is_alive(), "a new worker")
    wait_for(lambda: table_published(workers_server), "the table")  # unchanged: the new worker got it at start
    for _ in range(NUM_REQUESTS // 2):
        assert len(_stream_events(workers_server, "apple a day", 2)) >= 1


def test_workers_end_with_the_server(checkpoint, tmp_path):  # noqa: F811
    copy_example_model(tmp_path, "add_sub")
    running = start_server([tmp_path], http_workers=2)
    processes = [worker.process for worker in running.server.workers._workers]
    assert all(process.is_alive() for process in processes)
    running.stop()
    assert not any(process.is_alive() for process in processes)


def test_after_an_engine_restart_the_workers_serve_again(workers_server):
    """Last in this module: it kills the engine. Workers forward to the server while the engine is down (503
    naming the model, as the server answers), then attach to the new engine on the same socket."""
    instance = workers_server.server.manager._entries[MODEL].serving[1].scheduler.pool.instances[0]
    old_pid = instance.engines.client.process.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: instance.engines.client is None, "the engine to be seen dead")
    url = f"http://{workers_server.http_url}/v2/models/{MODEL}/generate_stream"
    while instance.engines.client is None:
        refused = requests.post(url, json={"text_input": "x"}, timeout=WAIT_S)
        if instance.engines.client is None and refused.status_code != 200:
            assert refused.status_code == 503 and f"model '{MODEL}'" in refused.json()["error"]
    wait_for(lambda: instance.engines.client is not None, "the engine to start again")

    def workers_serve_again() -> bool:
        before = own_first_tokens()
        for _ in range(NUM_REQUESTS):
            assert len(_stream_events(workers_server, "quick brown", 2)) >= 1
        return own_first_tokens() - before < NUM_REQUESTS

    wait_for(workers_serve_again, "the workers to attach to the new engine")
    assert instance.engines.client.process.pid != old_pid
