"""Issue 16's hostile requests all at once, while a probe sends add_sub over HTTP and gRPC: each hostile request
gets its documented outcome, every probe request is answered rightly, and the server's own event-loop lag
metric shows no stall (a 10 MB prompt once held the loop for 10 s).

Each hostile request alone, with its message, is tested where its bound lives (tests/server/frontends/openai/
test_request_bounds.py, http/test_json_depth.py, http/test_body_limit.py, grpc/test_undecodable_messages.py);
here they meet, on one server. The requests are the soak's (benchmarks/soak_hostile_requests.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.soak_good_requests import grpc_add_sub, http_add_sub
from benchmarks.soak_hostile_requests import HOSTILE_REQUESTS
from benchmarks.soak_target import Target, loop_lag
from benchmarks.soak_traffic import Tallies, send_hostile, traffic
from tests.server_harness import copy_example_model, start_server

MAX_INPUT_SIZE = 16 << 20  # room for the 10 MB prompts; a chunked body past it costs 16 MiB to send
# The clients run in this process too, and share its GIL with the server's loop: encoding a 10 MB prompt holds
# it for tens of ms, so the lag seen here is the server's and theirs (up to 0.3 s on a loaded 2-core machine,
# against 0.13 s for the server alone; benchmarks/soak.py holds the server alone to 0.5 s). A 10 s stall, as
# issue 16 found, is far past either bound.
MAX_LAG_S = 1.0  # a bucket bound of modelgate_event_loop_lag_seconds


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    repository = tmp_path_factory.mktemp("hostile_models")
    for name in ("add_sub", "tiny_llm"):
        copy_example_model(repository, name)
    running = start_server([repository], http_max_input_size=MAX_INPUT_SIZE)
    yield Target(running.http_url, running.grpc_url, running.metrics_url, max_input_size=MAX_INPUT_SIZE)
    running.stop()


def test_hostile_requests_at_once_leave_add_sub_served_and_the_loop_free(target):
    tallies = Tallies()
    lag_before = loop_lag(target.metrics_url, MAX_LAG_S)
    with traffic(target, tallies, [http_add_sub, grpc_add_sub], hostile=[]):  # the probe, until all are answered
        with ThreadPoolExecutor(len(HOSTILE_REQUESTS)) as pool:
            outcomes = list(pool.map(lambda request: send_hostile(request, target, tallies), HOSTILE_REQUESTS))
    lag_after = loop_lag(target.metrics_url, MAX_LAG_S)

    assert [(request.name, outcome) for request, outcome in zip(HOSTILE_REQUESTS, outcomes)] == [
        (request.name, request.expected) for request in HOSTILE_REQUESTS
    ]
    assert {name: (tally.num_failed, tally.failures) for name, tally in tallies.good.items()} == {
        "HTTP infer add_sub": (0, []),
        "gRPC infer add_sub": (0, []),
    }
    assert all(tally.num_sent > 0 for tally in tallies.good.values())
    assert lag_after.num_probes > lag_before.num_probes  # the loop's probe ran meanwhile
    assert lag_after.stalls_since(lag_before) == 0, f"a probe ran {MAX_LAG_S} s late or more: the loop stalled"
    assert lag_after.max_s < MAX_LAG_S
