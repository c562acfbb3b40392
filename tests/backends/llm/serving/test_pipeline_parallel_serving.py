"""A model served with pipeline_parallel_size 2 (gloo on the CPU): greedy text equals the engine alone; the
second stage's rank dying fails the model's in-flight request naming the model, and the engine, both stages,
starts again and serves the same text."""

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
def pp_server(checkpoint, tmp_path):
    running = serve_checkpoint(checkpoint, tmp_path, pipeline_parallel_size=2)
    yield running
    running.stop()


def test_pipeline_parallel_serving_and_a_stage_dying(pp_server, reference):
    prompt = PROMPTS[2]
    expected = reference.greedy(reference.prompt_ids(prompt), 10).text
    response = generate(pp_server, prompt, 10, exclude_input_in_output=True)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == expected

    # The last stage's rank dies while a request is in the engine: frozen first, so that the request certainly is.
    instance = first_instance(pp_server)
    engine_pid = instance.engines.client.process.pid
    (last_stage,) = spawned_children(engine_pid)
    os.kill(last_stage, signal.SIGSTOP)
    stream = GrpcStream(pp_server.grpc_url, MODEL)
    try:
        stream.send("doomed", "hello", greedy_sampling(LONG))
        wait_for(lambda: instance._active, "the request to reach the engine")
        os.kill(last_stage, signal.SIGKILL)
        result, error = stream.next()
        assert result is None
        assert f"model '{MODEL}'" in str(error) and "parallel ranks (tensor or pipeline) died" in str(error)
    finally:
        stream.close()
    wait_for(lambda: not is_running(engine_pid), "the engine of the dead stage to exit")

    wait_for(lambda: instance.engines.client is not None, "the engine to start again")
    response = generate(pp_server, prompt, 10, exclude_input_in_output=True)
    assert response.json()["text_output"] == expected
