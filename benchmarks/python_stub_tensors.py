"""Large tensors through a python-model stub: shared memory against frames, with the in-process model as floor.

An echo model (Y = X, FP32) is executed directly (no server): on the calling thread (isolation thread: no copy
at all), in a stub with tensors of shm_tensors.SHM_MIN_BYTES or more through shared memory (the default), and in a stub with every
tensor inside the frames (the shared-memory folder withheld). Prints ms per round trip and the ratio to frames.

    python benchmarks/python_stub_tensors.py --mib 16 64 128 --repeats 5
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec
from modelgate.backends.python import shm_tensors
from modelgate.backends.python.backend import PythonModelInstance
from modelgate.backends.python.process_instance import ProcessModelInstance
from modelgate.core.inference_types import InferRequest, InferTensor

ECHO_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""
ECHO_CONFIG = """
name: "echo" backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


def echo_spec(root: Path) -> InstanceSpec:
    version_dir = root / "echo" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(textwrap.dedent(ECHO_MODEL))
    config = text_format.Parse(ECHO_CONFIG, ModelConfig())
    return InstanceSpec("echo", 1, "echo_0", "CPU", 0, root / "echo", version_dir, config)


def round_trip_ms(instance, x: np.ndarray, repeats: int) -> float:
    def once():
        request = InferRequest("echo", "1", "", {}, {"X": InferTensor("X", "FP32", x.shape, x)})
        y = instance.execute([request]).responses[0].outputs[0].data
        if y.shape != x.shape or y[-1] != x[-1]:
            raise SystemExit("the echo came back wrong")

    once()
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[1, 16, 64], help="tensor sizes in MiB")
    parser.add_argument("--repeats", type=int, default=10, help="round trips timed per case")
    args = parser.parse_args()
    spec = echo_spec(Path(tempfile.mkdtemp()))
    make_folder = shm_tensors.make_folder
    setups = {
        "thread (in-process)": lambda: PythonModelInstance(spec),
        "stub, shared memory": lambda: ProcessModelInstance(spec),
        "stub, frames only": lambda: _without_shared_memory(spec, make_folder),
    }
    print(f"{'MiB':>5}  {'setting':<22}{'ms':>9}{'/ frames':>10}")
    for mib in args.mib:
        x = np.random.default_rng(mib).random(mib << 18, dtype=np.float32)
        times = {}
        for name, make in setups.items():
            instance = make()
            times[name] = round_trip_ms(instance, x, args.repeats)
            instance.unload()
            shm_tensors.make_folder = make_folder
        for name, ms in times.items():
            print(f"{mib:>5}  {name:<22}{ms:>9.1f}{ms / times['stub, frames only']:>10.2f}")
    return 0


def _without_shared_memory(spec: InstanceSpec, make_folder) -> ProcessModelInstance:
    shm_tensors.make_folder = lambda: None  # the stub then gets no folder: every tensor inside the frames
    return ProcessModelInstance(spec)


if __name__ == "__main__":
    raise SystemExit(main())
