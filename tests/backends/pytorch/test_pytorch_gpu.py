"""KIND_GPU instances: models run on cuda:<device_id>, each instance on its own stream.

Run on a CUDA machine with `python -m pytest -m gpu tests/backends/pytorch`.
"""

import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelgate.backends.pytorch.tensor_dtypes import to_numpy, to_torch
from tests.backends.pytorch import custom_ops
from tests.backends.pytorch import torch_models as tm
from tests.backends.pytorch.async_requests import send
from tests.backends.pytorch.conftest import CONFIGS, Caller, TorchServer, start_torch_server

pytestmark = pytest.mark.gpu

BF16 = np.dtype(ml_dtypes.bfloat16)
GPU_GROUP = "instance_group [ { count: %d kind: KIND_GPU gpus: [ 0 ] } ]"

GPU_CONFIGS = {
    "on_device": """
        name: "on_device"
        backend: "pytorch"
        max_batch_size: 8
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] },
                 { name: "OUTPUT__1" data_type: TYPE_INT64 dims: [ 1 ] } ]
        dynamic_batching { max_queue_delay_microseconds: 100 }
        """
    + GPU_GROUP % 1,
    "mixed_types": CONFIGS["mixed_types"] + GPU_GROUP % 1,
    "paired": CONFIGS["paired"].replace("instance_group [ { count: 2 kind: KIND_CPU } ]", GPU_GROUP % 2),
    "token_weights": 'name: "token_weights" backend: "pytorch" ' + GPU_GROUP % 1,
}


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("pytorch_gpu_models")
    modules = {
        "on_device": tm.write_torchscript(repository, "on_device", tm.OnDevice(), GPU_CONFIGS["on_device"]),
        "mixed_types": tm.write_torchscript(repository, "mixed_types", tm.MixedTypes(), GPU_CONFIGS["mixed_types"]),
        "paired": tm.write_torchscript(repository, "paired", tm.Paired(), GPU_CONFIGS["paired"]),
    }
    batch = torch.export.Dim("batch", max=64)
    example = (torch.ones(2, 5, dtype=torch.int64), torch.ones(2, 5))
    modules["token_weights"] = tm.write_exported(
        repository,
        "token_weights",
        tm.TokenWeights(),
        example,
        {"tokens": {0: batch}, "weight": {0: batch}},
        GPU_CONFIGS["token_weights"],
    )
    running = start_torch_server(repository)
    http = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
    grpc = grpcclient.InferenceServerClient(running.grpc_url)
    yield TorchServer(running, http, grpc, modules)
    http.close()
    grpc.close()
    running.stop()


@pytest.fixture(params=["http", "grpc"])
def gpu_caller(request, gpu_server) -> Caller:
    return Caller(request.param, gpu_server)


def test_every_gpu_model_loads(gpu_server):
    rows = {row["name"]: (row["state"], row["reason"]) for row in gpu_server.http.get_model_repository_index()}
    assert rows == {name: ("READY", "") for name in GPU_CONFIGS}


def test_a_torchscript_model_runs_on_the_gpu(gpu_caller):
    x = np.array([[1, 2, 3], [-4, 0.5, 6]], np.float32)
    got = gpu_caller.infer("on_device", {"INPUT__0": x})
    np.testing.assert_array_equal(got["OUTPUT__0"], 2 * x)
    np.testing.assert_array_equal(got["OUTPUT__1"], [[0], [0]])  # cuda:0, not -1 (CPU)


def test_fp16_bf16_int64_on_the_gpu_equal_the_module_on_the_cpu(gpu_caller, gpu_server):
    half = np.array([[1.5, -2.0], [0.1, 7.0]], np.float16)
    brain = np.array([[1.5, -3.0], [0.1, 7.0]], BF16)
    count = np.array([[2**40, -1], [0, 7]], np.int64)
    got = gpu_caller.infer("mixed_types", {"half": half, "brain": brain, "count": count})
    with torch.inference_mode():
        cpu = gpu_server.modules["mixed_types"](to_torch(half), to_torch(brain), to_torch(count))
    expected = {k: to_numpy(v) for k, v in cpu.items()}
    np.testing.assert_array_equal(got["half"], expected["half"])
    np.testing.assert_array_equal(got["brain"].view(np.uint16), expected["brain"].view(np.uint16))
    np.testing.assert_array_equal(got["count"], expected["count"])
    np.testing.assert_array_equal(got["widened"], expected["widened"].astype(np.float32))


def test_an_exported_program_moved_to_the_gpu(gpu_caller, gpu_server):
    tokens = np.array([[1, 0, 3, 0, 5], [0, 0, 0, 0, 9]], np.int64)
    weight = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    got = gpu_caller.infer("token_weights", {"tokens": tokens, "weight": weight})
    expected = gpu_server.modules["token_weights"].module()(torch.from_numpy(tokens), torch.from_numpy(weight))
    np.testing.assert_allclose(got["weighted"], expected["weighted"].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got["count"], expected["count"].numpy().reshape(2, 1))


def test_two_gpu_instances_run_at_once_on_their_own_streams(gpu_server):
    custom_ops.RENDEZVOUS_THREADS.clear()
    custom_ops.RENDEZVOUS_STREAMS.clear()
    x = np.array([[1, 2]], np.float32)
    futures = [send(gpu_server.grpc, "paired", x + k) for k in range(2)]
    for k, future in enumerate(futures):
        np.testing.assert_array_equal(future.result(timeout=30).as_numpy("OUTPUT__0"), x + k + 1)
    assert len(set(custom_ops.RENDEZVOUS_THREADS)) == 2
    streams = set(custom_ops.RENDEZVOUS_STREAMS)
    assert len(streams) == 2 and 0 not in streams, streams  # two streams, neither the default one


def test_concurrent_requests_on_the_gpu_each_get_their_rows(gpu_server):
    sent = [np.full((k % 3 + 1, 3), k, np.float32) for k in range(8)]
    futures = [send(gpu_server.grpc, "on_device", x) for x in sent]
    for x, future in zip(sent, futures):
        result = future.result(timeout=30)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), 2 * x)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), np.zeros((len(x), 1)))
