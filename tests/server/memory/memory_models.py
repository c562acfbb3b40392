"""Python models (on threads, in the test's process) that allocate fake device memory in initialize and free it
in finalize; their configs may declare what they need."""

from __future__ import annotations

from pathlib import Path

from tests.server_harness import write_model

MODEL_PY = """
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from tests.server.memory import fake_memory

ALLOCATES = {allocates}
EXECUTE_SECONDS = {execute_seconds}


class TritonPythonModel:
    def initialize(self, args):
        self.kind = args["model_instance_kind"]
        self.device = int(args["model_instance_device_id"])
        if ALLOCATES:
            fake_memory.MACHINE.allocate(self.kind, self.device, ALLOCATES)

    def execute(self, requests):
        time.sleep(EXECUTE_SECONDS)  # requests overlap: a model is busy while others want its room
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return responses

    def finalize(self):
        if ALLOCATES:
            fake_memory.MACHINE.allocate(self.kind, self.device, -ALLOCATES)
"""


def memory_model(
    repository: Path,
    name: str,
    allocates: int,
    kind: str = "KIND_GPU",
    declared: str | None = None,
    count: int = 1,
    gpus: tuple[int, ...] = (),
    backend: str = "python",
    execute_seconds: float = 0.0,
) -> Path:
    parameter = "gpu_memory_bytes" if kind == "KIND_GPU" else "cpu_memory_bytes"
    config = f"""
name: "{name}"
backend: "{backend}"
max_batch_size: 0
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
instance_group [ {{ kind: {kind} count: {count} {"gpus: " + str(list(gpus)) if gpus else ""} }} ]
parameters {{ key: "isolation" value {{ string_value: "thread" }} }}
"""
    if declared is not None:
        config += f'parameters {{ key: "{parameter}" value {{ string_value: "{declared}" }} }}\n'
    return write_model(repository, name, config, MODEL_PY.format(allocates=allocates, execute_seconds=execute_seconds))
