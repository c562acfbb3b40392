"""`modelgate bench tensor` against the example add_sub (HTTP) and batched_scale (gRPC): inputs shaped
from metadata, a concurrency sweep, and request counts that the server's statistics confirm."""

from __future__ import annotations

import json

import pytest
import tritonclient.http as httpclient

from modelgate.cli import main
from modelgate.clients.bench.tensor_bench import TensorBenchSettings, run_tensor_bench
from modelgate.clients.bench.tensor_inputs import InputSpec
from tests.server_harness import copy_example_model, start_server


@pytest.fixture(scope="module")
def tensor_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    for name in ("add_sub", "batched_scale", "repeat_int32"):
        copy_example_model(repository, name)
    running = start_server([repository])
    yield running
    running.stop()


def inference_count(server, model: str) -> tuple[int, int]:
    """(inferences, executions) in Triton's statistics: a batched request counts its batch size."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()
    return int(stats["inference_count"]), int(stats["execution_count"])


def check_levels(result, levels: list[int], per_level: int) -> None:
    assert [level.concurrency for level in result.levels] == levels
    for level in result.levels:
        assert level.num_ok == per_level and level.num_errors == 0 and not level.errors
        latency = level.latency_s
        assert latency["count"] == per_level
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert level.throughput_per_s > 0


def test_http_sweep_on_add_sub(tensor_server):
    before, _ = inference_count(tensor_server, "add_sub")
    settings = TensorBenchSettings(
        url=tensor_server.http_url, model="add_sub", concurrency=[1, 4], num_requests=12, warmup_requests=2
    )
    result = run_tensor_bench(settings)
    assert result.inputs == [InputSpec("INPUT0", "FP32", (4,)), InputSpec("INPUT1", "FP32", (4,))]
    check_levels(result, [1, 4], 12)
    after, _ = inference_count(tensor_server, "add_sub")
    assert after - before == 2 + 2 * 12


def test_grpc_batched_model_gets_batch_and_variable_sizes(tensor_server):
    before, _ = inference_count(tensor_server, "batched_scale")
    settings = TensorBenchSettings(
        url=tensor_server.grpc_url,
        protocol="grpc",
        model="batched_scale",
        concurrency=[2],
        num_requests=6,
        warmup_requests=0,
        batch_size=3,
        shape_size=5,
    )
    result = run_tensor_bench(settings)
    assert result.inputs == [InputSpec("X", "FP32", (3, 5))]
    check_levels(result, [2], 6)
    after, _ = inference_count(tensor_server, "batched_scale")
    assert after - before == 6 * 3  # every request carried a batch of three


def test_command_line_shape_override_and_json(tensor_server, tmp_path, capsys):
    output = tmp_path / "sweep.json"
    code = main(
        [
            "bench",
            "tensor",
            "--url",
            tensor_server.http_url,
            "-m",
            "batched_scale",
            "--concurrency",
            "1,2",
            "--num-requests",
            "4",
            "--warmup-requests",
            "0",
            "--shape",
            "X:7",
            "--output-file",
            str(output),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "X FP32[1, 7]" in printed and "infer/s" in printed and "p99 ms" in printed
    document = json.loads(output.read_text())
    assert [level["num_ok"] for level in document["levels"]] == [4, 4]
    assert document["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [1, 7]}]


def test_command_line_rejects_a_decoupled_model_and_unknown_inputs(tensor_server, capsys):
    assert main(["bench", "tensor", "--url", tensor_server.http_url, "-m", "add_sub", "--shape", "NOPE:3"]) == 2
    assert "unknown inputs ['NOPE']" in capsys.readouterr().err
    assert main(["bench", "tensor", "--url", tensor_server.grpc_url, "--protocol", "grpc", "-m", "repeat_int32"]) == 2
    assert "is decoupled" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shared_memory_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("shm_repository")
    copy_example_model(repository, "add_sub")
    running = start_server([repository], allow_shared_memory=True)
    yield running
    running.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_in_system_shared_memory(shared_memory_server, protocol):
    """Every request names a region; the regions are gone from the server (and the host) afterwards."""
    url = shared_memory_server.http_url if protocol == "http" else shared_memory_server.grpc_url
    before, _ = inference_count(shared_memory_server, "add_sub")
    settings = TensorBenchSettings(
        url=url, protocol=protocol, model="add_sub", concurrency=[2], num_requests=10, shared_memory="system"
    )
    result = run_tensor_bench(settings)
    check_levels(result, [2], 10)
    assert "in system shared memory" in result.table
    after, _ = inference_count(shared_memory_server, "add_sub")
    assert after - before == 5 + 10
    client = httpclient.InferenceServerClient(shared_memory_server.http_url)
    assert client.get_system_shared_memory_status() == []
    client.close()


def test_shared_memory_on_a_server_that_refuses_it(tensor_server, capsys):
    code = main(["bench", "tensor", "--url", tensor_server.http_url, "-m", "add_sub", "--shared-memory", "system"])
    assert code == 2
    assert "--allow-shared-memory" in capsys.readouterr().err
