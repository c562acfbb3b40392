"""Fixtures of the LLM serving tests: a tiny random-weight Llama served by one server (its engine in a spawned
process) for the whole package that uses them, the same checkpoint run by an in-process `LLMEngine`, alone,
that greedy results are checked against, and an OpenAI SDK client of the server.

A package's conftest.py imports them (tests/backends/llm/serving/, tests/server/frontends/openai/).
"""

from pathlib import Path

import pytest

from tests.backends.llm.serving.helpers import ENGINE_SETTINGS, MODEL, WAIT_S, ReferenceEngine
from tests.backends.llm.tiny_checkpoint import make_tiny_checkpoint
from tests.server_harness import RunningServer, start_server


@pytest.fixture(scope="package")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("llm_repository") / MODEL / "1")


@pytest.fixture(scope="package")
def server(checkpoint) -> RunningServer:
    parameters = dict(ENGINE_SETTINGS, show_progress="false")
    config = f'name: "{MODEL}"\nbackend: "llm"\n' + "".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{str(value).lower()}" }} }}\n'
        for key, value in parameters.items()
    )
    (checkpoint.parent / "config.pbtxt").write_text(config)
    running = start_server([checkpoint.parent.parent])
    yield running
    running.stop()


@pytest.fixture(scope="package")
def reference(checkpoint) -> ReferenceEngine:
    return ReferenceEngine(checkpoint, **ENGINE_SETTINGS)


@pytest.fixture(scope="package")
def oai(server):
    import openai  # here, not at the top: the GPU machine runs this package's kernel tests without openai

    client = openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0, timeout=WAIT_S)
    yield client
    client.close()
