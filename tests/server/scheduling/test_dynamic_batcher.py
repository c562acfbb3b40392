"""The dynamic batcher through a running server: batching, shapes, queue policies, priorities."""

import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import start_server, write_model

BATCH_MODEL = """
import json, os, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.gate = config["parameters"]["gate"]["string_value"]
        self.calls = 0

    def execute(self, requests):
        deadline = time.time() + 20
        if os.path.exists(self.gate):
            open(self.gate + ".busy", "w").close()
        while os.path.exists(self.gate) and time.time() < deadline:
            time.sleep(0.005)
        self.calls += 1
        rows = sum(pb_utils.get_input_tensor_by_name(r, "X").as_numpy().shape[0] for r in requests)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            n = x.shape[0]
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("Y", x * 2),
                pb_utils.Tensor("REQUESTS", np.full((n, 1), len(requests), np.int32)),
                pb_utils.Tensor("ROWS", np.full((n, 1), rows, np.int32)),
                pb_utils.Tensor("CALL", np.full((n, 1), self.calls, np.int32)),
            ]))
        return responses
"""

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] {ragged} }} ]
output [
  {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "REQUESTS" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "ROWS" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "CALL" data_type: TYPE_INT32 dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ {batching} }}
parameters {{ key: "gate" value {{ string_value: "{gate}" }} }}
"""

MODELS = {
    "batched": "max_queue_delay_microseconds: 2000000 preferred_batch_size: [ 4 ]",
    "ragged": "max_queue_delay_microseconds: 2000000 preferred_batch_size: [ 4 ]",
    "bounded": "default_queue_policy { max_queue_size: 2 }",
    "prioritized": "priority_levels: 2 default_priority_level: 2",
    "timeouts": (
        "priority_levels: 2 default_priority_level: 1 "
        "priority_queue_policy { key: 1 value { timeout_action: REJECT allow_timeout_override: true } } "
        "priority_queue_policy { key: 2 value { timeout_action: DELAY allow_timeout_override: true } }"
    ),
    "immediate": "",
    "delayed": "max_queue_delay_microseconds: 300000 preferred_batch_size: [ 4 ]",
}


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("batching")
    gates = {}
    for name, batching in MODELS.items():
        gate = repository / f"{name}.gate"
        gates[name] = gate
        ragged = "allow_ragged_batch: true" if name == "ragged" else ""
        write_model(
            repository, name, CONFIG.format(name=name, batching=batching, gate=gate, ragged=ragged), BATCH_MODEL
        )
    running = start_server([repository])
    client = httpclient.InferenceServerClient(running.http_url, concurrency=16, network_timeout=60)
    yield running, client, gates
    client.close()
    running.stop()


def _input(rows: int, width: int = 2, value: float = 1.0):
    tensor = httpclient.InferInput("X", [rows, width], "FP32")
    tensor.set_data_from_numpy(np.full((rows, width), value, np.float32))
    return tensor


def _pending(running, model: str) -> float:
    text = urllib.request.urlopen(running.metrics_url, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_pending(running, model: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while _pending(running, model) < count:
        assert time.monotonic() < deadline, f"{count} requests never queued for {model}"
        time.sleep(0.01)


class _Gate:
    """Hold the model's only instance busy in its first execute until released."""

    def __init__(self, running, client, gate, model: str):
        self.running, self.client, self.gate, self.model = running, client, gate, model

    def __enter__(self):
        self.busy = self.gate.with_name(self.gate.name + ".busy")
        self.busy.unlink(missing_ok=True)
        self.gate.write_text("closed")
        self.blocker = self.client.async_infer(self.model, [_input(1)])
        deadline = time.monotonic() + 20
        while not self.busy.exists():  # the model is inside execute, waiting on the gate
            assert time.monotonic() < deadline, "the blocking request never started"
            time.sleep(0.01)
        return self

    def queue(self, count: int):
        return [self.client.async_infer(self.model, [_input(1)]) for _ in range(count)]

    def __exit__(self, *exc):
        self.gate.unlink(missing_ok=True)
        self.blocker.get_result()


def _call(result, name="CALL"):
    return int(result.as_numpy(name)[0, 0])


def _metric(running, name: str, **labels) -> float:
    text = urllib.request.urlopen(running.metrics_url, timeout=10).read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_queued_requests_run_as_one_batch_of_the_preferred_size(batching_server):
    running, client, gates = batching_server
    before = client.get_inference_statistics("batched")["model_stats"][0]
    labels = {"model": "batched", "version": "1"}
    requests_before = _metric(running, "modelgate_inference_exec_requests", **labels)
    fours_before = _metric(running, "modelgate_inference_batch_executions", batch_size="4", **labels)
    with _Gate(running, client, gates["batched"], "batched") as gate:
        queued = gate.queue(4)
        _wait_pending(running, "batched", 4)
    results = [q.get_result() for q in queued]
    assert {_call(r, "REQUESTS") for r in results} == {4}
    assert len({_call(r) for r in results}) == 1
    for result in results:
        np.testing.assert_array_equal(result.as_numpy("Y"), np.full((1, 2), 2.0, np.float32))
    after = client.get_inference_statistics("batched")["model_stats"][0]
    assert after["execution_count"] - before["execution_count"] == 2  # the blocker, then one batch of 4
    assert after["inference_count"] - before["inference_count"] == 5
    assert any(b["batch_size"] == 4 for b in after["batch_stats"])
    # The metrics show the batching too: 5 requests in 2 executions, one of them of 4 rows.
    assert _metric(running, "modelgate_inference_exec_requests", **labels) - requests_before == 5
    assert _metric(running, "modelgate_inference_batch_executions", batch_size="4", **labels) - fours_before == 1


def test_batches_never_exceed_max_batch_size_rows(batching_server):
    running, client, gates = batching_server
    with _Gate(running, client, gates["batched"], "batched"):
        queued = [client.async_infer("batched", [_input(3)]) for _ in range(4)]
        _wait_pending(running, "batched", 4)
    rows = [_call(q.get_result(), "ROWS") for q in queued]
    assert max(rows) <= 8 and rows.count(6) == 4  # two batches of two 3-row requests


def test_different_shapes_are_not_merged_unless_ragged(batching_server):
    running, client, gates = batching_server
    for model, expect_merged in (("batched", False), ("ragged", True)):
        with _Gate(running, client, gates[model], model):
            narrow = [client.async_infer(model, [_input(1, width=2)]) for _ in range(2)]
            wide = [client.async_infer(model, [_input(1, width=3)]) for _ in range(2)]
            _wait_pending(running, model, 4)
        calls_narrow = {_call(q.get_result()) for q in narrow}
        calls_wide = {_call(q.get_result()) for q in wide}
        assert (calls_narrow == calls_wide) is expect_merged, model


def test_full_queue_is_refused_with_503(batching_server):
    running, client, gates = batching_server
    with _Gate(running, client, gates["bounded"], "bounded"):
        queued = [client.async_infer("bounded", [_input(1)]) for _ in range(2)]
        _wait_pending(running, "bounded", 2)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("bounded", [_input(1)])
    assert refused.value.status() == "503" and "max_queue_size 2" in refused.value.message()
    for request in queued:
        request.get_result()


def test_higher_priority_runs_first(batching_server):
    running, client, gates = batching_server
    with _Gate(running, client, gates["prioritized"], "prioritized"):
        # 5 rows each: two never fit one batch of max_batch_size 8, so the order shows.
        low = client.async_infer("prioritized", [_input(5)], priority=2)
        _wait_pending(running, "prioritized", 1)
        high = client.async_infer("prioritized", [_input(5)], priority=1)
        _wait_pending(running, "prioritized", 2)
    assert _call(high.get_result()) < _call(low.get_result())


def test_bad_priority_is_a_400(batching_server):
    _, client, _ = batching_server
    with pytest.raises(InferenceServerException) as caught:
        client.infer("prioritized", [_input(1)], priority=3)
    assert caught.value.status() == "400" and "priority 3 is out of range" in caught.value.message()


def test_timeouts_reject_or_delay(batching_server):
    running, client, gates = batching_server
    with _Gate(running, client, gates["timeouts"], "timeouts"):
        rejected = client.async_infer("timeouts", [_input(5)], priority=1, timeout=1000)
        delayed = client.async_infer("timeouts", [_input(5)], priority=2, timeout=1000)
        _wait_pending(running, "timeouts", 2)
        time.sleep(0.05)  # let both timeouts (1 ms) pass while the instance is busy
        on_time = client.async_infer("timeouts", [_input(5)], priority=2)
        _wait_pending(running, "timeouts", 2)
    with pytest.raises(InferenceServerException) as caught:
        rejected.get_result()
    assert "timeout expired" in caught.value.message()
    assert _call(delayed.get_result()) >= _call(on_time.get_result())


def test_without_delay_a_lone_request_is_not_held(batching_server):
    _, client, _ = batching_server
    result = client.infer("immediate", [_input(2)])
    assert _call(result, "REQUESTS") == 1 and _call(result, "ROWS") == 2


def test_a_lone_request_waits_for_the_queue_delay_then_runs_alone(batching_server):
    """The batcher holds a request up to max_queue_delay for company, then sends what it has.

    Checked through the server's statistics: the request's queue time covers the 300 ms delay, and it
    ran as a batch of one (it did not wait for a preferred batch that never came).
    """
    _, client, _ = batching_server
    before = client.get_inference_statistics("delayed")["model_stats"][0]["inference_stats"]["queue"]
    result = client.infer("delayed", [_input(1)])
    after = client.get_inference_statistics("delayed")["model_stats"][0]["inference_stats"]["queue"]
    assert _call(result, "REQUESTS") == 1
    assert after["count"] - before["count"] == 1
    assert after["ns"] - before["ns"] >= 300_000 * 1000
