"""A CUDA tensor to a python model in another stub and back (BLS): CUDA IPC against the host round trip.

Two python models, each in its stub process: `caller` makes an N MiB float32 CUDA tensor and sends it to `echo`
by BLS (`InferenceRequest.exec()`), `echo` (FORCE_CPU_ONLY_INPUT_TENSORS "no") returns it as it got it. The
server's part of BLS is a direct call of the echo instance (no dataplane or network: the boundary alone). Timed
inside the caller, each round trip synchronized, for:
- cuda ipc: the CUDA tensor itself: caller stub -> server -> echo stub -> server -> caller, by CUDA IPC handles,
  each receiver copying on the GPU (cuda_ipc_tensors.py);
- host: the same tensor moved .cpu() in the caller, sent as a numpy array (shared memory from 32 MiB), and
  moved back with .cuda(): what a CUDA tensor cost before;
- 4 d2d copies: the floor of the IPC path, the four device-to-device copies it makes, in the caller's process.
Prints ms per round trip and the ratio to the host round trip. Needs a CUDA GPU:

    python benchmarks/python_stub_cuda_tensors.py --mib 1 16 64 256 --repeats 20
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec
from modelgate.backends.python.process_instance import ProcessModelInstance
from modelgate.core.inference_types import InferRequest, InferTensor, RequestedOutput

MODES = ("cuda ipc", "host", "4 d2d copies")

ECHO_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor._wrap("Y", pb_utils.get_input_tensor_by_name(r, "X")._data)])
                for r in requests]
"""
ECHO_CONFIG = """
name: "echo" backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "FORCE_CPU_ONLY_INPUT_TENSORS" value { string_value: "no" } }
"""

CALLER_MODEL = """
import time
import numpy as np
import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

def bls(x):
    request = pb_utils.InferenceRequest(model_name="echo", inputs=[x], requested_output_names=["Y"])
    reply = request.exec()
    if reply.has_error():
        raise pb_utils.TritonModelException(reply.error().message())
    return pb_utils.get_output_tensor_by_name(reply, "Y")

def cuda_ipc(x):
    y = bls(pb_utils.Tensor.from_dlpack("X", torch.utils.dlpack.to_dlpack(x)))
    assert not y.is_cpu(), "came back in host memory"
    return torch.utils.dlpack.from_dlpack(y.to_dlpack())

def host(x):
    y = bls(pb_utils.Tensor("X", x.cpu().numpy()))
    return torch.from_numpy(y.as_numpy()).cuda()

def d2d_copies(x):
    for _ in range(4):
        x = x.clone()
    return x

TRIPS = {"cuda ipc": cuda_ipc, "host": host, "4 d2d copies": d2d_copies}

def ms_per_trip(trip, x, repeats):
    y = trip(x)  # warm: handles, allocations, pages
    torch.cuda.synchronize()
    if not torch.equal(y, x):
        raise pb_utils.TritonModelException("the tensor came back changed")
    started = time.perf_counter()
    for _ in range(repeats):
        trip(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1e3

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mib = int(pb_utils.get_input_tensor_by_name(request, "MIB").as_numpy()[0])
            repeats = int(pb_utils.get_input_tensor_by_name(request, "REPEATS").as_numpy()[0])
            x = torch.rand(mib << 18, dtype=torch.float32, device="cuda")
            times = [ms_per_trip(trip, x, repeats) for trip in TRIPS.values()]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("MS", np.array(times, np.float64))]))
        return responses
"""
CALLER_CONFIG = """
name: "caller" backend: "python"
input [ { name: "MIB" data_type: TYPE_INT64 dims: [ 1 ] }, { name: "REPEATS" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "MS" data_type: TYPE_FP64 dims: [ 3 ] } ]
"""


def model_spec(root: Path, name: str, model: str, config: str, call_model=None) -> InstanceSpec:
    version_dir = root / name / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(textwrap.dedent(model))
    parsed = text_format.Parse(config, ModelConfig())
    return InstanceSpec(name, 1, f"{name}_0", "GPU", 0, root / name, version_dir, parsed, call_model=call_model)


def caller_times(caller: ProcessModelInstance, mib: int, repeats: int) -> dict[str, float]:
    inputs = {
        name: InferTensor(name, "INT64", (1,), np.array([value], dtype=np.int64))
        for name, value in (("MIB", mib), ("REPEATS", repeats))
    }
    response = caller.execute([InferRequest("caller", "1", "", {}, inputs, [RequestedOutput("MS")])]).responses[0]
    if response.error is not None:
        raise SystemExit(f"the caller failed: {response.error}")
    return dict(zip(MODES, response.outputs[0].data.tolist()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[1, 16, 64], help="tensor sizes in MiB")
    parser.add_argument("--repeats", type=int, default=20, help="round trips timed per case")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    torch.cuda.init()  # the server's side of BLS opens the stubs' handles here
    root = Path(tempfile.mkdtemp())
    echo = ProcessModelInstance(model_spec(root, "echo", ECHO_MODEL, ECHO_CONFIG))
    caller = ProcessModelInstance(
        model_spec(root, "caller", CALLER_MODEL, CALLER_CONFIG, lambda r: echo.execute([r]).responses[0])
    )
    try:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
        print(f"{'MiB':>5}  {'round trip':<14}{'ms':>9}{'/ host':>9}{'GB/s':>8}")
        for mib in args.mib:
            times = caller_times(caller, mib, args.repeats)
            for mode, ms in times.items():
                rate = 2 * (mib << 20) / (ms / 1e3) / 1e9  # there and back
                print(f"{mib:>5}  {mode:<14}{ms:>9.3f}{ms / times['host']:>9.3f}{rate:>8.1f}")
    finally:
        caller.unload()
        echo.unload()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
