"""Load on demand with LRU eviction over a fake 10 GiB GPU: models of 4 GiB each, two fit at once."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from modelgate.server.memory.ledger import MemoryLedger
from tests.server.memory import fake_memory
from tests.server.memory.fake_memory import GIB, FakeMemory
from tests.server.memory.memory_models import memory_model
from tests.server_harness import start_server

MODELS = ("a", "b", "c")


@pytest.fixture
def repository(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_memory, "MACHINE", FakeMemory([10 * GIB]))
    for name in MODELS:
        memory_model(tmp_path, name, allocates=GIB, declared="4GiB")
    return tmp_path


def _serve(repository, **settings):
    ledger = MemoryLedger(fake_memory.MACHINE)
    return start_server(
        [repository], ledger=ledger, model_control_mode="explicit", model_load_on_demand=True, **settings
    )


def _infer(client, name: str, value: float = 1.0) -> float:
    x = httpclient.InferInput("X", [2], "FP32")
    x.set_data_from_numpy(np.array([value, value], dtype=np.float32))
    return float(client.infer(name, [x]).as_numpy("Y")[0])


def _counts(server, family: str) -> dict[str, float]:
    text = requests.get(server.metrics_url, timeout=10).text
    return {
        sample.labels["model"]: sample.value
        for metric in text_string_to_metric_families(text)
        for sample in metric.samples
        if sample.name == family + "_total"
    }


def test_a_request_loads_its_model_and_the_least_recently_used_idle_one_makes_room(repository):
    server = _serve(repository)
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert not client.is_model_ready("a")
        assert _infer(client, "a") == 2.0 and _infer(client, "b") == 2.0
        assert _infer(client, "a") == 2.0  # a is now the most recently used: b goes
        assert _infer(client, "c") == 2.0
        assert [client.is_model_ready(m) for m in MODELS] == [True, False, True]
        assert _counts(server, "modelgate_model_evictions") == {"b": 1.0}
        assert _counts(server, "modelgate_model_loads_on_demand") == {"a": 1.0, "b": 1.0, "c": 1.0}
        index = {row["name"]: row for row in client.get_model_repository_index()}
        assert index["b"]["state"] == "UNAVAILABLE" and "evicted" in index["b"]["reason"]
        assert (
            client.get_server_metadata() and requests.get(f"http://{server.http_url}/v2/health/ready", timeout=10).ok
        )  # an evicted model does not make the server unready
    finally:
        client.close()
        server.stop()


def test_pinned_models_stay_and_metadata_loads_on_demand(repository):
    server = _serve(repository, pin_model=["a"])
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert client.get_model_metadata("a")["name"] == "a"  # perf_analyzer asks this before any request
        assert client.get_model_config("b")["name"] == "b"
        _infer(client, "b")
        _infer(client, "a")  # a most recent, but pinned: b is still the one to go
        assert _infer(client, "c") == 2.0
        assert [client.is_model_ready(m) for m in MODELS] == [True, False, True]
    finally:
        client.close()
        server.stop()


def test_a_load_with_nothing_to_evict_is_refused_and_counted(repository):
    server = _serve(repository, pin_model=["a", "b"])
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        _infer(client, "a")
        _infer(client, "b")
        with pytest.raises(InferenceServerException) as refused:
            _infer(client, "c")
        assert "needs 4.0 GiB on GPU 0" in str(refused.value) and "no idle model to evict" in str(refused.value)
        assert refused.value.status() == "503"
        assert _counts(server, "modelgate_model_load_refusals") == {"c": 1.0}
        assert _infer(client, "a") == 2.0
    finally:
        client.close()
        server.stop()


def test_concurrent_requests_across_more_models_than_fit_all_succeed(repository):
    for name in MODELS:
        memory_model(repository, name, allocates=GIB, declared="4GiB", execute_seconds=0.01)
    server = _serve(repository)
    failures, answered = [], []

    def client_thread(seed: int) -> None:
        client = httpclient.InferenceServerClient(server.http_url)
        chooser = random.Random(seed)
        try:
            for _ in range(25):
                value = float(chooser.randint(0, 100))
                try:
                    answered.append(_infer(client, chooser.choice(MODELS), value) == value + 1)
                except InferenceServerException as exc:
                    failures.append(str(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=client_thread, args=(seed,)) for seed in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == [] and len(answered) == 150 and all(answered)
        assert sum(_counts(server, "modelgate_model_evictions").values()) >= 1
    finally:
        server.stop()


def test_load_on_demand_needs_explicit_mode(tmp_path):
    from pydantic import ValidationError

    from modelgate.server.settings import ServerSettings

    with pytest.raises(ValidationError, match="needs --model-control-mode explicit"):
        ServerSettings(model_repository=[tmp_path], model_load_on_demand=True)
