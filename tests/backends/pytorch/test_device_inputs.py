"""Inputs that arrive as torch tensors (a client's CUDA shared-memory region, read on its GPU) reach a PyTorch
instance as they are: joined with torch on their device, moved to the instance's device, never through numpy.
On the CPU the same path runs with CPU tensors; the GPU test runs it with CUDA tensors made on the default
stream, as the server makes them, and an instance on a stream of its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec
from modelgate.backends.pytorch.instance import PyTorchInstance
from modelgate.core.inference_types import InferRequest, InferTensor
from tests.backends.pytorch.torch_models import AddSub, write_torchscript

CONFIG = """
name: "add_sub"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


def _instance(tmp_path, kind: str) -> PyTorchInstance:
    write_torchscript(tmp_path, "add_sub", AddSub(), CONFIG)
    config = text_format.Parse(CONFIG, ModelConfig())
    model_dir = tmp_path / "add_sub"
    return PyTorchInstance(InstanceSpec("add_sub", 1, "add_sub_0", kind, 0, model_dir, model_dir / "1", config))


def _request(a, b) -> InferRequest:
    tensors = {"INPUT__0": a, "INPUT__1": b}
    return InferRequest(
        "add_sub", inputs={name: InferTensor(name, "FP32", tuple(t.shape), t) for name, t in tensors.items()}
    )


def _sums_and_differences(instance: PyTorchInstance, requests: list[InferRequest]) -> list[tuple[list, list]]:
    responses = instance.execute(requests).responses
    assert all(response.error is None for response in responses)
    return [tuple(output.data.tolist() for output in response.outputs) for response in responses]


def test_tensor_inputs_are_joined_with_torch_and_answered_per_request(tmp_path):
    instance = _instance(tmp_path, "CPU")
    ones, twos = torch.ones(1, 2), torch.full((2, 2), 2.0)
    # Two tensor requests join into one call; a numpy request beside them runs apart (never mixed in one join).
    requests = [
        _request(ones, twos[:1]),
        _request(twos, ones.expand(2, 2)),
        _request(np.ones((1, 2), np.float32), np.ones((1, 2), np.float32)),
    ]
    assert _sums_and_differences(instance, requests) == [
        ([[3.0, 3.0]], [[-1.0, -1.0]]),
        ([[3.0, 3.0]] * 2, [[1.0, 1.0]] * 2),
        ([[2.0, 2.0]], [[0.0, 0.0]]),
    ]
    assert instance.staging.buffer_bytes == 0  # the tensors were not staged through host buffers


@pytest.mark.gpu
def test_cuda_inputs_made_on_the_default_stream_reach_an_instance_on_its_own_stream(tmp_path):
    instance = _instance(tmp_path, "GPU")
    base = torch.arange(2 * 4096, dtype=torch.float32, device="cuda").reshape(4096, 2)
    requests = []
    for k in range(4):
        # As the server reads a CUDA region: a clone queued on the default stream, not waited for.
        a, b = (base[:2] * (k + 1)).clone(), (base[:2] + k).clone()
        requests.append(_request(a, b))
    answers = _sums_and_differences(instance, requests)
    for k, (sums, differences) in enumerate(answers):
        a, b = (base[:2] * (k + 1)).cpu(), (base[:2] + k).cpu()
        assert (sums, differences) == ((a + b).tolist(), (a - b).tolist())
    assert instance.staging.buffer_bytes == 0
