"""Ensemble configs and small python models for the ensemble tests.

Models that must run concurrently to finish wait for each other through marker files with
a bounded loop: without concurrency a request fails with a timeout error, never hangs.
"""

from __future__ import annotations

from pathlib import Path

from tests.server_harness import write_model

# Writes <marker_dir>/<own name>, then waits (bounded) for <marker_dir>/<wait_for>; Y = X * factor.
RENDEZVOUS_MODEL = """
import json
import os
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.marker_dir = parameters["marker_dir"]["string_value"]
        self.wait_for = parameters["wait_for"]["string_value"]
        self.factor = np.float32(parameters["factor"]["string_value"])
        self.name = args["model_name"]

    def execute(self, requests):
        open(os.path.join(self.marker_dir, self.name), "w").close()
        other = os.path.join(self.marker_dir, self.wait_for)
        deadline = time.monotonic() + 10
        while not os.path.exists(other):
            if time.monotonic() > deadline:
                raise TimeoutError(self.name + " waited 10 s for " + self.wait_for + ": the steps did not run concurrently")
            time.sleep(0.005)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * self.factor)])
                for r in requests]
"""

# SUM = A + B.
JOIN_MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", a + b)]))
        return responses
"""

# Y = X; appends a line to the file named by its `init_log` parameter in each initialize.
COUNTED_MODEL = """
import json
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        path = json.loads(args["model_config"])["parameters"]["init_log"]["string_value"]
        with open(path, "a") as log:
            log.write("initialized\\n")

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""

JOIN_CONFIG = """
name: "join"
backend: "python"
input [ { name: "A" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "B" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


FP32_X = [("X", "TYPE_FP32", [-1])]  # an ensemble input X: FP32 of any length
FP32_Y = [("Y", "TYPE_FP32", [-1])]
SCALE_STEP = [("scale", -1, {"X": "X"}, {"Y": "Y"})]  # one step: the latest `scale` model maps X to Y


def tensor_list(tensors) -> str:
    """`[ {name, data_type, dims}, ... ]` in pbtxt from (name, data type, dims) tuples."""
    items = [f'{{ name: "{n}" data_type: {t} dims: [ {", ".join(str(d) for d in dims)} ] }}' for n, t, dims in tensors]
    return "[ " + ", ".join(items) + " ]"


def ensemble_config(name: str, inputs, outputs, steps, max_batch_size: int = 0, extra: str = "") -> str:
    """An ensemble config.pbtxt; `steps` are (model, version, {model input: tensor}, {model output: tensor})."""
    written = []
    for model, version, input_map, output_map in steps:
        maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in input_map.items()]
        maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in output_map.items()]
        written.append(f'{{ model_name: "{model}" model_version: {version} {" ".join(maps)} }}')
    return f"""
name: "{name}"
platform: "ensemble"
max_batch_size: {max_batch_size}
input {tensor_list(inputs)}
output {tensor_list(outputs)}
ensemble_scheduling {{ step [ {", ".join(written)} ] }}
{extra}
"""


def model_stats(client, model: str) -> dict:
    """The statistics of `model` (all versions) as tritonclient HTTP returns them."""
    return client.get_inference_statistics(model)["model_stats"][0]


def write_ensemble(repository: Path, name: str, config: str) -> Path:
    """An ensemble folder: its config and an empty version folder 1/, as Triton requires."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def write_rendezvous_model(repository: Path, name: str, wait_for: str, factor: float, marker_dir: Path) -> None:
    parameters = {"marker_dir": str(marker_dir), "wait_for": wait_for, "factor": str(factor)}
    written = "\n".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in parameters.items())
    config = f"""
name: "{name}"
backend: "python"
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }} ]
{written}
"""
    write_model(repository, name, config, RENDEZVOUS_MODEL)


def write_diamond(repository: Path, marker_dir: Path) -> None:
    """`diamond`: X -> left (X * 1) and right (X * 2), concurrently, then join: OUT = 3 * X."""
    write_rendezvous_model(repository, "left", "right", 1.0, marker_dir)
    write_rendezvous_model(repository, "right", "left", 2.0, marker_dir)
    write_model(repository, "join", JOIN_CONFIG, JOIN_MODEL)
    steps = [
        ("left", -1, {"X": "X"}, {"Y": "l"}),
        ("right", -1, {"X": "X"}, {"Y": "r"}),
        ("join", -1, {"A": "l", "B": "r"}, {"SUM": "OUT"}),
    ]
    fp32 = [("X", "TYPE_FP32", [-1])]
    write_ensemble(repository, "diamond", ensemble_config("diamond", fp32, [("OUT", "TYPE_FP32", [-1])], steps))
