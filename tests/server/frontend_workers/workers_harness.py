"""A server with frontend workers for the tests of this package: the tiny LLM (its engine in a process of its
own) and add_sub, served on ports that several processes share. Each module that uses it starts its own.

That the workers served some requests is read from the server process's own LLM metrics (in the test's process:
the server runs there), which count only what the server served itself.
"""

from __future__ import annotations

from pathlib import Path

from modelgate.backends.llm import llm_metrics
from tests.backends.llm.serving.helpers import ENGINE_SETTINGS, MODEL, WAIT_S, wait_for  # noqa: F401  (for the tests)
from tests.server_harness import RunningServer, copy_example_model, start_server

NUM_PROCESSES = 3
NUM_REQUESTS = 12  # on connections of their own: all landing on the server alone has odds of (1/3)**12


def start_workers_server(checkpoint: Path, tensor_repository: Path) -> RunningServer:
    """The server, once the workers were told of the LLM (they serve it from then on)."""
    parameters = dict(ENGINE_SETTINGS, show_progress="false")
    config = f'name: "{MODEL}"\nbackend: "llm"\n' + "".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{str(value).lower()}" }} }}\n'
        for key, value in parameters.items()
    )
    (checkpoint.parent / "config.pbtxt").write_text(config)
    copy_example_model(tensor_repository, "add_sub")
    running = start_server([checkpoint.parent.parent, tensor_repository], http_workers=NUM_PROCESSES)
    wait_for(lambda: table_published(running), "the workers to be told of the LLM")
    return running


def table_published(running: RunningServer) -> bool:
    table = running.server.workers._table
    return table is not None and [m.name for m in table.models] == [MODEL]


def own_first_tokens() -> float:
    """Requests whose first token the server process itself sent (the test's process: the server runs here)."""
    histogram = llm_metrics.TIME_TO_FIRST_TOKEN.labels(MODEL, "1")
    return next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count"))
