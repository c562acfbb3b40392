"""A model served with tensor_parallel_size 2 (gloo on the CPU): greedy text equals the engine alone; a rank
that dies fails the model's in-flight request naming the model, and the engine, all ranks, starts again; an
engine process (rank 0) that dies leaves no worker behind."""

from __future__ import annotations

import os
import signal

import pytest

from tests.backends.llm.process_tree import is_running, spawned_children
from tests.backends.llm.serving.helpers import (
    LONG,
    MODEL,
    PROMPTS,
    GrpcStream,
    first_instance,
    generate,
    greedy_sampling,
    serve_checkpoint,
    wait_for,
)


@pytest.fixture
def tp_server(checkpoint, tmp_path):
    running = serve_checkpoint(checkpoint, tmp_path, tensor_parallel_size=2)
    yield running
    running.stop()


def test_tensor_parallel_serving_and_rank_failures(tp_server, reference):
    prompt = PROMPTS[1]
    response = generate(tp_server, prompt, 10, exclude_input_in_output=True)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == reference.greedy(reference.prompt_ids(prompt), 10).text

    # Rank 1 dies while a request is in the engine: frozen first, so that the request certainly is.
    instance = first_instance(tp_server)
    engine_pid = instance.engines.client.process.pid
    (worker,) = spawned_children(engine_pid)
    os.kill(worker, signal.SIGSTOP)
    stream = GrpcStream(tp_server.grpc_url, MODEL)
    try:
        stream.send("doomed", "hello", greedy_sampling(LONG))
        wait_for(lambda: instance._active, "the request to reach the engine")
        os.kill(worker, signal.SIGKILL)
        result, error = stream.next()
        assert result is None
        assert f"model '{MODEL}'" in str(error) and "parallel ranks (tensor or pipeline) died" in str(error)
    finally:
        stream.close()
    wait_for(lambda: not is_running(engine_pid), "the engine of the dead rank to exit")

    # All ranks start again and serve.
    wait_for(lambda: instance.engines.client is not None, "the engine to start again")
    response = generate(tp_server, prompt, 10, exclude_input_in_output=True)
    assert response.json()["text_output"] == reference.greedy(reference.prompt_ids(prompt), 10).text

    # Rank 0 (the engine process) dies: its worker follows it.
    engine_pid = instance.engines.client.process.pid
    (worker,) = spawned_children(engine_pid)
    os.kill(engine_pid, signal.SIGKILL)
    wait_for(lambda: not is_running(worker), "the worker of the killed engine to exit")
