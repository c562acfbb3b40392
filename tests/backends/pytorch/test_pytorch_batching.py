"""Dynamic batches run as one forward() call and split back per request; instances run concurrently.

Both use test-only torch ops (custom_ops.py) that the scripted models call: `gated` waits at
a gate while the test queues requests behind it, and `paired` only returns once two calls
are inside forward() at once, which two instances can do and one instance never could.
"""

import time
import urllib.request

import numpy as np

from tests.backends.pytorch import custom_ops
from tests.backends.pytorch.async_requests import send


def _pending(running, model: str) -> float:
    text = urllib.request.urlopen(running.metrics_url, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_queued_requests_run_as_one_forward_call_and_each_gets_its_rows(torch_server):
    client, running = torch_server.grpc, torch_server.running
    custom_ops.GATE.close()
    try:
        blocker = send(client, "gated", np.zeros((1, 2), np.float32))
        _wait_until(custom_ops.GATE.entered.is_set, "the first request never reached the gate")
        rows = [1, 3, 2, 1]  # 7 rows in all, within max_batch_size 8
        sent = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * k for k, n in enumerate(rows)]
        queued = [send(client, "gated", x) for x in sent]
        _wait_until(lambda: _pending(running, "gated") >= len(sent), "the requests never queued")
    finally:
        custom_ops.GATE.open()
    blocker.result(timeout=30)
    for x, request in zip(sent, queued):
        result = request.result(timeout=30)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), 2 * x)  # its own rows, in order
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), np.full((len(x), 1), sum(rows)))
    stats = torch_server.http.get_inference_statistics("gated")["model_stats"][0]
    assert {b["batch_size"] for b in stats["batch_stats"]} >= {1, sum(rows)}
    assert stats["inference_count"] == 1 + sum(rows) and stats["execution_count"] == 2


def test_two_instances_execute_at_the_same_time(torch_server):
    client = torch_server.grpc
    custom_ops.RENDEZVOUS_THREADS.clear()
    x = np.array([[1, 2]], np.float32)
    requests = [send(client, "paired", x + k) for k in range(2)]
    for k, request in enumerate(requests):
        np.testing.assert_array_equal(request.result(timeout=30).as_numpy("OUTPUT__0"), x + k + 1)
    threads = set(custom_ops.RENDEZVOUS_THREADS)
    assert len(threads) == 2 and all(t.startswith("instance-paired_0_") for t in threads), threads
    stats = torch_server.http.get_inference_statistics("paired")["model_stats"][0]
    assert stats["execution_count"] == 2 and stats["inference_stats"]["compute_infer"]["count"] == 2
