"""The rate limiter through a running server and tritonclient (HTTP and gRPC): concurrency across models is
bounded by the resources, priority weighs the order of starts, queue time includes the wait, bad configs and
shortages fail the load naming the field or resource."""

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.server.rate_limiter.concurrency_models import read_ledger, wait_until, write_counting_model

R1 = 'rate_limiter { resources [ { name: "R1" count: 1 } ] }'


def _client(protocol: str, running):
    if protocol == "http":
        return httpclient.InferenceServerClient(running.http_url, network_timeout=60)
    return grpcclient.InferenceServerClient(running.grpc_url)


def _infer(protocol: str, running, model: str, shape=(1,), **options) -> None:
    """One request on a client of its own (tritonclient's HTTP client is not for sharing between threads)."""
    module = httpclient if protocol == "http" else grpcclient
    client = _client(protocol, running)
    tensor = module.InferInput("IN", list(shape), "INT32")
    tensor.set_data_from_numpy(np.full(shape, 7, np.int32))
    try:
        assert client.infer(model, [tensor], **options).as_numpy("OUT").tolist() == np.full(shape, 7).tolist()
    finally:
        client.close()


def _send(protocol: str, running, model: str, count: int = 1, **options) -> list[threading.Thread]:
    threads = [threading.Thread(target=_infer, args=(protocol, running, model), kwargs=options) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _pending(running, model: str) -> int:
    [stats] = running.server.stats.select(model, "1")
    return stats.pending_requests


@pytest.fixture
def gated(make_server):
    """Gate files of the test; removed before its server stops, so a failed test leaves no execution holding."""
    gates = []
    yield gates
    for gate in gates:
        gate.unlink(missing_ok=True)


def _two_models(tmp_path, rate_limiter: str):
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    gates = [write_counting_model(repository, name, rate_limiter, ledger) for name in ("a", "b")]
    return repository, ledger, gates


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_two_models_needing_the_one_copy_of_a_resource_never_run_at_once(make_server, gated, tmp_path, protocol):
    repository, ledger, gates = _two_models(tmp_path, R1)
    running = make_server([repository], rate_limit="execution_count")
    for gate in gates:
        gated.append(gate)
        gate.touch()
    threads = _send(protocol, running, "a")
    wait_until(lambda: read_ledger(ledger)["now"] == 1, "a's execution started")
    threads += _send(protocol, running, "b", 2)
    # b's requests wait for R1, not for an instance: b's instance is free (it could take up to 8 at once).
    wait_until(lambda: _pending(running, "b") == 2, "b's requests wait for the resource")
    assert read_ledger(ledger)["now"] == 1
    for gate in gates:
        gate.unlink()
    for thread in threads:
        thread.join(60)
    state = read_ledger(ledger)
    assert state["max"] == 1 and sorted(state["starts"]) == ["a", "b", "b"]


def test_without_rate_limit_the_same_models_run_at_once(make_server, gated, tmp_path):
    repository, ledger, gates = _two_models(tmp_path, R1)
    running = make_server([repository])  # --rate-limit off: the rate_limiter fields are accepted, no effect
    _check_both_run_at_once(running, "http", gates, gated, ledger)


def test_a_dynamic_batcher_forms_its_batch_once_its_instance_may_run(make_server, gated, tmp_path):
    """As Triton: every batch size is preferred, yet the 4 requests that came while the resource was taken go
    as one batch, formed when the instance got the resource (not a batch of 1 waiting for it)."""
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    gate = write_counting_model(repository, "holder", R1, ledger)
    batching = "dynamic_batching { preferred_batch_size: [ 1, 2, 3, 4 ] }"
    write_counting_model(repository, "batched", R1, ledger, max_batch_size=4, extra=batching)
    running = make_server([repository], rate_limit="execution_count")
    gated.append(gate)
    gate.touch()
    threads = _send("http", running, "holder")
    wait_until(lambda: read_ledger(ledger)["now"] == 1, "holder's execution started")
    threads += _send("grpc", running, "batched", 4, shape=(1, 1))
    wait_until(lambda: _pending(running, "batched") == 4, "the batched model's requests wait")
    gate.unlink()
    for thread in threads:
        thread.join(60)
    stats = _client("grpc", running).get_inference_statistics("batched", as_json=True)["model_stats"][0]
    assert stats["execution_count"] == "1" and stats["inference_count"] == "4"
    assert read_ledger(ledger)["max"] == 1


def test_a_sequence_model_waits_for_the_resource_before_each_batch(make_server, gated, tmp_path):
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    gate = write_counting_model(repository, "holder", R1, ledger)
    sequence = "sequence_batching { max_sequence_idle_microseconds: 60000000 }"
    write_counting_model(repository, "stateful", R1, ledger, extra=sequence)
    running = make_server([repository], rate_limit="execution_count")
    gated.append(gate)
    gate.touch()
    threads = _send("grpc", running, "holder")
    wait_until(lambda: read_ledger(ledger)["now"] == 1, "holder's execution started")
    threads += _send("grpc", running, "stateful", sequence_id=5, sequence_start=True)
    wait_until(lambda: _pending(running, "stateful") == 1, "the sequence's request waits")
    assert read_ledger(ledger)["now"] == 1
    gate.unlink()
    for thread in threads:
        thread.join(60)
    _infer("http", running, "stateful", sequence_id=5, sequence_end=True)
    state = read_ledger(ledger)
    assert state["max"] == 1 and state["starts"] == ["holder", "stateful", "stateful"]


def test_unloading_a_model_refuses_its_waiting_requests_and_frees_nothing_it_did_not_hold(make_server, gated, tmp_path):
    repository, ledger, gates = _two_models(tmp_path, R1)
    running = make_server([repository], rate_limit="execution_count", model_control_mode="explicit", load_model=["*"])
    client = _client("grpc", running)
    gated.append(gates[0])
    gates[0].touch()
    threads = _send("grpc", running, "a")
    wait_until(lambda: read_ledger(ledger)["now"] == 1, "a's execution started")
    failures = []
    waiting = threading.Thread(target=lambda: failures.append(_failure(running, "b")))
    waiting.start()
    wait_until(lambda: _pending(running, "b") == 1, "b's request waits for the resource")
    client.unload_model("b")
    waiting.join(60)
    assert "model 'b' is unloading" in failures[0]
    gates[0].unlink()
    for thread in threads:
        thread.join(60)
    client.load_model("b")
    _infer("http", running, "b")  # R1 is free again: b runs
    assert read_ledger(ledger)["max"] == 1 and read_ledger(ledger)["starts"] == ["a", "b"]
    client.close()


def _failure(running, model: str) -> str:
    try:
        _infer("grpc", running, model)
    except Exception as exc:  # the request's error as the client saw it
        return str(exc)
    return "succeeded"


def test_plenty_of_the_resource_lets_the_models_run_at_once(make_server, gated, tmp_path):
    repository, ledger, gates = _two_models(tmp_path, R1)
    running = make_server([repository], rate_limit="execution_count", rate_limit_resource=["r1:2"])
    _check_both_run_at_once(running, "grpc", gates, gated, ledger)


def _check_both_run_at_once(running, protocol: str, gates, gated, ledger) -> None:
    """Hold both models' executions at their gates until a and b execute together, then let them finish."""
    for gate in gates:
        gated.append(gate)
        gate.touch()
    threads = _send(protocol, running, "a") + _send(protocol, running, "b")
    wait_until(lambda: read_ledger(ledger)["now"] == 2, "a and b executing together")
    for gate in gates:
        gate.unlink()
    for thread in threads:
        thread.join(60)
    assert read_ledger(ledger)["max"] == 2


def test_priority_2_starts_half_as_often_as_priority_1(make_server, gated, tmp_path):
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    blocker_gate = write_counting_model(repository, "blocker", R1, ledger)
    for name, priority in (("p1", 1), ("p2", 2)):
        rate_limiter = f'rate_limiter {{ resources [ {{ name: "R1" count: 1 }} ] priority: {priority} }}'
        write_counting_model(repository, name, rate_limiter, ledger)
    running = make_server([repository], rate_limit="execution_count")
    gated.append(blocker_gate)
    blocker_gate.touch()
    threads = _send("grpc", running, "blocker")
    wait_until(lambda: read_ledger(ledger)["now"] == 1, "the blocker holds R1")
    threads += _send("grpc", running, "p2", 6) + _send("grpc", running, "p1", 6)
    wait_until(lambda: _pending(running, "p1") == _pending(running, "p2") == 6, "p1 and p2 wait for R1")
    blocker_gate.unlink()
    for thread in threads:
        thread.join(60)
    starts = read_ledger(ledger)["starts"]
    assert starts[0] == "blocker" and len(starts) == 13
    # While both wait, each start adds the instance's priority to its pass and the lowest pass goes next: in
    # any 9 starts p1 runs 6 times and p2 3 (equal priorities would take turns: 5 and 4).
    assert starts[1:10].count("p1") == 6 and starts[1:10].count("p2") == 3


def test_time_waiting_for_resources_counts_as_queue_time(make_server, gated, tmp_path):
    repository, ledger, gates = _two_models(tmp_path, R1)
    running = make_server([repository], rate_limit="execution_count")
    client = _client("http", running)
    gated.append(gates[0])
    gates[0].touch()
    threads = _send("http", running, "a")
    wait_until(lambda: read_ledger(ledger)["now"] == 1, "a's execution started")
    threads += _send("http", running, "b")
    wait_until(lambda: _pending(running, "b") == 1, "b waits for the resource")
    held_from = time.monotonic_ns()
    time.sleep(0.2)
    held_ns = time.monotonic_ns() - held_from
    gates[0].unlink()
    for thread in threads:
        thread.join(60)
    stats = client.get_inference_statistics("b")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 1
    # b waited at least as long as the test held a's execution after b arrived.
    assert stats["inference_stats"]["queue"]["ns"] >= held_ns
    client.close()


def _reason(running, model: str) -> str:
    client = grpcclient.InferenceServerClient(running.grpc_url)
    rows = {row.name: row for row in client.get_model_repository_index().models}
    assert not client.is_model_ready(model)
    client.close()
    return rows[model].reason


def test_a_resource_count_below_an_instance_s_need_fails_its_load(make_server, tmp_path):
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    write_counting_model(repository, "greedy", 'rate_limiter { resources [ { name: "R1" count: 4 } ] }', ledger)
    running = make_server(
        [repository], rate_limit="execution_count", rate_limit_resource=["R1:3"], strict_readiness=False
    )
    assert (
        'Resource count for "r1" is limited to 3 which will prevent scheduling of one or more model instances, '
        "the minimum required count is 4" in _reason(running, "greedy")
    )


@pytest.mark.parametrize(
    ("rate_limiter", "field", "problem"),
    [
        ("rate_limiter { resources [ { count: 1 } ] }", "resources[0].name", "is required"),
        (
            'rate_limiter { resources [ { name: "R1" count: 1 }, { name: "r1" count: 2 } ] }',
            "resources[1].name",
            "'r1' is listed twice in this rate_limiter",
        ),
    ],
)
def test_a_bad_rate_limiter_config_fails_the_load_naming_the_field(make_server, tmp_path, rate_limiter, field, problem):
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    write_counting_model(repository, "bad", rate_limiter, ledger)
    running = make_server([repository], strict_readiness=False)  # refused with --rate-limit off too
    assert f"field 'instance_group[0].rate_limiter.{field}': {problem}" in _reason(running, "bad")


def test_one_model_may_not_make_a_resource_both_global_and_per_device(make_server, tmp_path):
    repository, ledger = tmp_path / "models", tmp_path / "ledger.json"
    model_dir = repository / "mixed"
    write_counting_model(repository, "mixed", R1, ledger)
    config = (model_dir / "config.pbtxt").read_text()
    second = 'instance_group [ { count: 1 kind: KIND_CPU rate_limiter { resources [ { name: "R1" global: true count: 1 } ] } } ]'
    (model_dir / "config.pbtxt").write_text(config + second)
    running = make_server([repository], strict_readiness=False)
    reason = _reason(running, "mixed")
    assert "field 'instance_group[1].rate_limiter.resources[0].global'" in reason
    assert 'resource "R1" is present as both global and device-specific resource' in reason
