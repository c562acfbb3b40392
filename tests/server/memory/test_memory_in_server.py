"""The memory ledger in a running server, over a fake machine of two 10 GiB GPUs (and over this machine's
host memory): placement, refusals that explain themselves, measured figures, limits, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelgate.server.memory.ledger import MemoryLedger
from tests.server.memory import fake_memory
from tests.server.memory.fake_memory import GIB, FakeMemory
from tests.server.memory.memory_models import memory_model
from tests.server_harness import copy_example_model, start_server


@pytest.fixture
def machine(monkeypatch):
    fake = FakeMemory([10 * GIB, 10 * GIB])
    monkeypatch.setattr(fake_memory, "MACHINE", fake)
    return fake


def _serve(repository, machine, gpu_limit=None, **settings):
    ledger = MemoryLedger(machine, gpu_limit=gpu_limit)
    return start_server([repository], ledger=ledger, model_control_mode="explicit", **settings)


def _usage(client: httpclient.InferenceServerClient, name: str) -> list[dict]:
    return client.get_inference_statistics(name)["model_stats"][0]["memory_usage"]


def _infer(client: httpclient.InferenceServerClient, name: str) -> list[float]:
    x = httpclient.InferInput("X", [2], "FP32")
    x.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    return client.infer(name, [x]).as_numpy("Y").tolist()


def test_instances_go_where_there_is_room_and_a_load_that_does_not_fit_is_refused(tmp_path, machine):
    memory_model(tmp_path, "a", allocates=1 * GIB, declared="6GiB")
    memory_model(tmp_path, "b", allocates=1 * GIB, declared="5GiB")
    memory_model(tmp_path, "c", allocates=1 * GIB, declared="5GiB")
    memory_model(tmp_path, "d", allocates=1 * GIB, declared="5GiB")
    server = _serve(tmp_path, machine)
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        for name in ("a", "b", "c"):
            client.load_model(name)
        # a went to GPU 0 (both empty: the first), b to GPU 1 (10 free against 4), c to GPU 1 (5 against 4).
        assert _usage(client, "a") == [{"type": "GPU", "id": 0, "byte_size": 6 * GIB}]  # declared: the floor
        assert _usage(client, "b") == [{"type": "GPU", "id": 1, "byte_size": 5 * GIB}]
        assert _usage(client, "c") == [{"type": "GPU", "id": 1, "byte_size": 5 * GIB}]
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("d")
        message = str(refused.value)
        assert "model 'd' version 1 (d_0_0) needs 5.0 GiB on GPU 0 (declared as gpu_memory_bytes)" in message
        assert "GPU 0 has 4.0 GiB free of its 10.0 GiB limit; held by 'a' 6.0 GiB" in message
        assert "free elsewhere: GPU 1 0 MiB" in message
        assert machine.used_bytes(machine.devices()[0]) == 1 * GIB  # refused before it started: nothing allocated
        assert not client.is_model_ready("d") and _infer(client, "a") == [2.0, 3.0]
        client.unload_model("a")
        client.load_model("d")  # a's room is free again
        assert _usage(client, "d") == [{"type": "GPU", "id": 0, "byte_size": 5 * GIB}]
        assert _infer(client, "d") == [2.0, 3.0]
    finally:
        client.close()
        server.stop()


def test_an_undeclared_model_is_measured_and_its_measure_checked_at_its_next_load(tmp_path, machine):
    memory_model(tmp_path, "measured", allocates=3 * GIB, gpus=(0,))
    memory_model(tmp_path, "filler", allocates=0, declared="8GiB", gpus=(0,))
    server = _serve(tmp_path, machine)
    client = httpclient.InferenceServerClient(server.http_url)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.load_model("measured")
        assert _usage(client, "measured") == [{"type": "GPU", "id": 0, "byte_size": 3 * GIB}]
        usage = grpc_client.get_inference_statistics("measured").model_stats[0].memory_usage
        assert [(u.type, u.id, u.byte_size) for u in usage] == [("GPU", 0, 3 * GIB)]
        index = {row["name"]: row for row in client.get_model_repository_index()}
        assert index["measured"]["memory_usage"] == [{"type": "GPU", "id": 0, "byte_size": 3 * GIB}]
        client.unload_model("measured")
        client.load_model("filler")
        with pytest.raises(InferenceServerException, match=r"needs 3\.0 GiB on GPU 0 \(measured at its last load\)"):
            client.load_model("measured")
    finally:
        grpc_client.close()
        client.close()
        server.stop()


def test_a_gpu_memory_limit_is_a_fraction_or_a_size_of_each_gpu(tmp_path, machine):
    memory_model(tmp_path, "big", allocates=0, declared="6GiB")
    server = _serve(tmp_path, machine, gpu_limit="50%")
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException, match=r"GPU 0 has 5\.0 GiB free of its 5\.0 GiB limit"):
            client.load_model("big")
    finally:
        client.close()
        server.stop()


def test_host_memory_is_accounted_under_a_cpu_memory_limit(tmp_path):
    copy_example_model(tmp_path, "add_sub")  # a python model in a process of its own: measured by its RSS
    memory_model(tmp_path, "huge", allocates=0, kind="KIND_CPU", declared="2GiB")
    server = start_server([tmp_path], model_control_mode="explicit", cpu_memory_limit="1GiB")
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        client.load_model("add_sub")
        [usage] = _usage(client, "add_sub")
        assert usage["type"] == "CPU" and usage["id"] == 0 and 0 < usage["byte_size"] < 1 * GIB
        with pytest.raises(InferenceServerException, match=r"needs 2\.0 GiB on CPU .* of its 1\.0 GiB limit"):
            client.load_model("huge")
    finally:
        client.close()
        server.stop()


def test_without_a_cpu_memory_limit_the_host_is_not_accounted(tmp_path):
    memory_model(tmp_path, "huge", allocates=0, kind="KIND_CPU", declared="100TiB")
    server = start_server([tmp_path], model_control_mode="explicit")
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        client.load_model("huge")
        assert _usage(client, "huge") == []
    finally:
        client.close()
        server.stop()


def test_a_declared_size_that_is_not_one_fails_the_load_naming_the_parameter(tmp_path, machine):
    memory_model(tmp_path, "odd", allocates=0, declared="lots")
    server = _serve(tmp_path, machine)
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException, match=r"parameters\.gpu_memory_bytes.*'lots' is not a byte"):
            client.load_model("odd")
    finally:
        client.close()
        server.stop()
