"""Python-backend models and client helpers for the repository and lifecycle tests.

Every model here is small and deterministic. Models that must hold the server in a state
(LOADING, UNLOADING) wait for a release file with a bounded loop, so a failing test never
hangs the suite.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import write_model

# Y = X * factor + version: the answer tells which version and which config served it.
SCALE_MODEL = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.factor = np.float32(parameters.get("factor", {}).get("string_value", "1"))
        self.version = np.float32(args["model_version"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = (x * self.factor + self.version).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""

INITIALIZE_RAISES_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is corrupt (initialize of version " + args["model_version"] + ")")

    def execute(self, requests):
        raise AssertionError("never executed")
"""

# Raises for a negative first element: the failure belongs to that request alone.
EXECUTE_RAISES_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if x.size and x.flat[0] < 0:
                raise ValueError("negative input is not allowed by this model")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x.astype(np.float32))]))
        return responses
"""

# Waits in initialize (or finalize) until the file named by the `release_file` parameter exists;
# creates `<release_file>.waiting` first.
_WAIT_FOR_RELEASE = """
import json
import os
import time
import numpy as np
import triton_python_backend_utils as pb_utils

def wait_for_release(path):
    open(path + ".waiting", "w").close()  # tells the test that the model is now waiting
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("release file never appeared: " + path)
        time.sleep(0.01)

class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.release_file = parameters["release_file"]["string_value"]
        {initialize_wait}

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]

    def finalize(self):
        {finalize_wait}
"""
SLOW_INITIALIZE_MODEL = _WAIT_FOR_RELEASE.replace("{initialize_wait}", "wait_for_release(self.release_file)").replace(
    "{finalize_wait}", "pass"
)
SLOW_FINALIZE_MODEL = _WAIT_FOR_RELEASE.replace("{initialize_wait}", "pass").replace(
    "{finalize_wait}", "wait_for_release(self.release_file)"
)

# No configuration file: the model describes itself, as Triton's auto_complete_config allows.
AUTO_COMPLETE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "A", "data_type": "TYPE_INT32", "dims": [3]})
        auto_complete_model_config.add_output({"name": "DOUBLED", "data_type": "TYPE_INT32", "dims": [3]})
        auto_complete_model_config.set_max_batch_size(4)
        return auto_complete_model_config

    def execute(self, requests):
        doubled = [pb_utils.get_input_tensor_by_name(r, "A").as_numpy() * 2 for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("DOUBLED", d)]) for d in doubled]
"""

# BLS: asks the model named by the `target` parameter for Y, answers Y + 100.
BLS_CALLER_MODEL = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.target = parameters["target"]["string_value"]
        self.target_version = int(parameters.get("target_version", {}).get("string_value", "-1"))

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X")
            inner = pb_utils.InferenceRequest(
                model_name=self.target, model_version=self.target_version,
                inputs=[pb_utils.Tensor("X", x.as_numpy())], requested_output_names=["Y"])
            reply = inner.exec()
            if reply.has_error():
                error = pb_utils.TritonError("BLS failed: " + reply.error().message())
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            y = pb_utils.get_output_tensor_by_name(reply, "Y").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (y + 100).astype(np.float32))]))
        return responses
"""

# Writes a marker file into its own folder when loaded: proves whether it was ever loaded.
MARKER_MODEL = """
from pathlib import Path

class TritonPythonModel:
    def initialize(self, args):
        (Path(args["model_repository"]) / "LOADED_MARKER").write_text("loaded")

    def execute(self, requests):
        return []
"""


def xy_config(name: str, extra: str = "", max_batch_size: int = 0, backend: str = "python") -> str:
    """A config.pbtxt with one FP32 input X and output Y of variable length."""
    return f"""
name: "{name}"
backend: "{backend}"
max_batch_size: {max_batch_size}
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }} ]
{extra}
"""


def parameter(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}'


def write_scale_model(repository: Path, name: str, versions=(1,), extra: str = "", max_batch_size: int = 0) -> Path:
    return write_model(repository, name, xy_config(name, extra, max_batch_size), SCALE_MODEL, versions=versions)


def config_json(name: str, extra: dict | None = None, max_batch_size: int = 0) -> str:
    """The same model as `xy_config`, as the JSON string a load request's `config` carries."""
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}],
    }
    config.update(extra or {})
    return json.dumps(config)


def infer_x(client: httpclient.InferenceServerClient, name: str, x, version: str = "") -> np.ndarray:
    """Y for input X = `x` (FP32)."""
    array = np.asarray(x, dtype=np.float32)
    tensor = httpclient.InferInput("X", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return client.infer(name, [tensor], model_version=version).as_numpy("Y")


def index_rows(client: httpclient.InferenceServerClient) -> dict[tuple[str, str], dict]:
    """The repository index keyed by (name, version); version "" for rows without one."""
    return {(row["name"], row.get("version", "")): row for row in client.get_model_repository_index()}


def state_of(client: httpclient.InferenceServerClient, name: str, version: str = "1") -> tuple[str, str] | None:
    """(state, reason) of one model version in the index; None when the index has no such row."""
    row = index_rows(client).get((name, version))
    return None if row is None else (row.get("state", ""), row.get("reason", ""))


def server_error(call, *args, **kwargs) -> InferenceServerException:
    """The InferenceServerException that `call(*args, **kwargs)` raises (fails the test if none)."""
    try:
        call(*args, **kwargs)
    except InferenceServerException as exc:
        return exc
    raise AssertionError(f"{getattr(call, '__name__', call)}{args} succeeded but should have failed")


def wait_until(predicate, what: str, timeout: float = 20.0):
    """Poll `predicate` until it returns a truthy value (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def raw_request(running, method: str, path: str, body: bytes = b"") -> tuple[int, dict | list | None]:
    """Send `path` exactly as written (no client-side quoting or dot-segment removal): (status, JSON)."""
    connection = http.client.HTTPConnection("127.0.0.1", running.server.http_port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    return response.status, (json.loads(payload) if payload else None)
