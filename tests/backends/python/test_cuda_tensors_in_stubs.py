"""GPU tensors between python models (BLS) and to clients, through real stubs and CUDA IPC (needs a GPU).

`gpu_caller` makes a CUDA tensor of N float32 values (N from the client: 16M is 64 MiB), sends it to
`gpu_twice` by BLS and checks on its GPU what comes back: Y = 2X + 1, and SAME, X itself sent back (a tensor
that arrived by IPC sent on again). `gpu_twice` fails the request if its input is not on the GPU, so a host
trip on the way in shows as an error; the caller's checks say whether the outputs came back on the GPU.
The caller also returns Y's first values as a CUDA tensor: the client gets them as bytes, like any output.

    python -m pytest -m gpu tests/backends/python/test_cuda_tensors_in_stubs.py
"""

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.lifecycle_models import parameter
from tests.server_harness import write_model

pytestmark = pytest.mark.gpu


@pytest.fixture
def serve(make_server):
    """serve(repository) -> a tritonclient.http client of a server of it; both closed after the test."""
    clients = []

    def factory(repository):
        client = httpclient.InferenceServerClient(make_server([repository]).http_url, network_timeout=120)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


MIB_64 = 16 << 20  # float32 values

CALLER_CONFIG = """
name: "gpu_caller"
backend: "python"
input [ { name: "N" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "CHECKS" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "HEAD" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

CALLER_MODEL = """
import json
import numpy as np
import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

def as_torch(tensor):
    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack())

class TritonPythonModel:
    def initialize(self, args):
        self.target = json.loads(args["model_config"])["parameters"]["target"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            x = torch.arange(n, dtype=torch.float32, device="cuda")
            inner = pb_utils.InferenceRequest(
                model_name=self.target,
                inputs=[pb_utils.Tensor.from_dlpack("X", torch.utils.dlpack.to_dlpack(x))],
                requested_output_names=["Y", "SAME"],
            )
            reply = inner.exec()
            if reply.has_error():
                raise pb_utils.TritonModelException(reply.error().message())
            y = pb_utils.get_output_tensor_by_name(reply, "Y")
            same = pb_utils.get_output_tensor_by_name(reply, "SAME")
            y_gpu = as_torch(y).to("cuda")  # no-op when it came back on the GPU
            checks = [
                not y.is_cpu(),
                not same.is_cpu(),
                bool(torch.equal(y_gpu, x * 2 + 1)),
                bool(torch.equal(as_torch(same).to("cuda"), x)),
            ]
            head = pb_utils.Tensor.from_dlpack("HEAD", torch.utils.dlpack.to_dlpack(y_gpu[:8].contiguous()))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("CHECKS", np.array(checks, np.int32)), head]))
        return responses
"""

TWICE_CONFIG = """
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }}, {{ name: "SAME" data_type: TYPE_FP32 dims: [ -1 ] }} ]
{extra}
"""

# Needs its input on the GPU: FORCE_CPU_ONLY_INPUT_TENSORS "no", as in Triton.
GPU_TWICE_MODEL = """
import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X")
            if x.is_cpu():
                raise pb_utils.TritonModelException("input X arrived in host memory, not on the GPU")
            x = torch.utils.dlpack.from_dlpack(x.to_dlpack())
            y = x * 2 + 1
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor.from_dlpack("Y", torch.utils.dlpack.to_dlpack(y)),
                pb_utils.Tensor.from_dlpack("SAME", torch.utils.dlpack.to_dlpack(x)),
            ]))
        return responses
"""

# Written for host inputs (as_numpy), as most Triton models are: it gets them so by default, GPU caller or not.
HOST_TWICE_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2 + 1), pb_utils.Tensor("SAME", x)]))
        return responses
"""


def _isolation(value: str) -> str:
    return parameter("isolation", value)


def _repository(tmp_path, caller_isolation: str, target_isolation: str, target_model: str = GPU_TWICE_MODEL):
    caller_extra = parameter("target", "twice") + "\n" + _isolation(caller_isolation)
    write_model(tmp_path, "gpu_caller", CALLER_CONFIG + caller_extra, CALLER_MODEL)
    extra = _isolation(target_isolation)
    if target_model is GPU_TWICE_MODEL:
        extra += "\n" + parameter("FORCE_CPU_ONLY_INPUT_TENSORS", "no")
    write_model(tmp_path, "twice", TWICE_CONFIG.format(name="twice", extra=extra), target_model)
    return tmp_path


def _call(client, n: int) -> tuple[list[int], np.ndarray]:
    tensor = httpclient.InferInput("N", [1], "INT64")
    tensor.set_data_from_numpy(np.array([n], dtype=np.int64))
    result = client.infer("gpu_caller", [tensor])
    return result.as_numpy("CHECKS").tolist(), result.as_numpy("HEAD")


@pytest.mark.parametrize(
    ("caller_isolation", "target_isolation"), [("process", "process"), ("thread", "process"), ("process", "thread")]
)
def test_a_64_mib_gpu_tensor_goes_to_a_python_model_and_back_on_the_gpu(
    tmp_path, serve, caller_isolation, target_isolation
):
    client = serve(_repository(tmp_path, caller_isolation, target_isolation))
    for n in (MIB_64, 1000, MIB_64):  # again: the receivers' IPC handles and copies are made afresh each time
        checks, head = _call(client, n)
        assert checks == [1, 1, 1, 1]  # outputs on the GPU, with the right values
        np.testing.assert_array_equal(head, np.arange(8, dtype=np.float32) * 2 + 1)  # host bytes for the client


def test_a_model_written_for_host_inputs_gets_them_from_a_gpu_caller(tmp_path, serve):
    client = serve(_repository(tmp_path, "process", "process", HOST_TWICE_MODEL))
    checks, head = _call(client, 1 << 20)
    assert checks == [0, 0, 1, 1]  # the outputs it made are numpy arrays: they come back in host memory
    np.testing.assert_array_equal(head, np.arange(8, dtype=np.float32) * 2 + 1)


def test_a_zero_size_gpu_tensor_crosses_too(tmp_path, serve):
    client = serve(_repository(tmp_path, "process", "process"))
    checks, head = _call(client, 0)
    assert checks == [1, 1, 1, 1] and head.shape == (0,)
