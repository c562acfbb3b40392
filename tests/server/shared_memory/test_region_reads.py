"""Where reading an input out of a region runs: large host copies on a thread, CUDA regions on the loop."""

import asyncio
import os

import numpy as np
import pytest
import torch

from modelgate.core.inference_types import InferRequest, InferTensor
from modelgate.server.shared_memory import tensor_io
from modelgate.server.shared_memory.cuda_region import CudaRegion
from modelgate.server.shared_memory.registry import SharedMemoryRegistry

LARGE = tensor_io.THREAD_COPY_BYTES * 2


class _RecordedThreads:
    def __init__(self):
        self.calls = 0

    async def __call__(self, function, *args):
        self.calls += 1
        return function(*args)


@pytest.fixture
def recorded(monkeypatch):
    threads = _RecordedThreads()
    monkeypatch.setattr(tensor_io.asyncio, "to_thread", threads)
    # What the read produced is beside the point here: only where it ran.
    monkeypatch.setattr(tensor_io, "_read_tensor", lambda span, tensor, where: ("read", span.region.name))
    return threads


def _request_reading(region: str) -> InferRequest:
    parameters = {tensor_io.REGION: region, tensor_io.BYTE_SIZE: LARGE}
    tensor = InferTensor("IMAGE", "UINT8", (LARGE,), None, parameters)
    return InferRequest(model_name="m", model_version="", inputs={"IMAGE": tensor})


def test_a_large_cuda_region_input_is_read_on_the_loop(recorded):
    registry = SharedMemoryRegistry()
    registry._regions["gpu"] = CudaRegion("gpu", 0, LARGE, torch.zeros(LARGE, dtype=torch.uint8))
    request = _request_reading("gpu")
    asyncio.run(tensor_io.read_inputs(request, registry))
    assert request.inputs["IMAGE"].data == ("read", "gpu")
    assert recorded.calls == 0


def test_a_large_system_region_input_is_read_on_a_thread(recorded, tmp_path):
    registry = SharedMemoryRegistry()
    key = f"/modelgate-test-reads-{tmp_path.name}"
    with open(f"/dev/shm{key}", "wb") as backing:
        backing.write(np.zeros(LARGE, np.uint8).tobytes())
    try:
        registry.register_system("host", key, 0, LARGE)
        request = _request_reading("host")
        asyncio.run(tensor_io.read_inputs(request, registry))
    finally:
        os.unlink(f"/dev/shm{key}")
    assert request.inputs["IMAGE"].data == ("read", "host")
    assert recorded.calls == 1
