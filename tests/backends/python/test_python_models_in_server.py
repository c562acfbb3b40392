"""Models written for Triton's python backend, served by modelgate and called with tritonclient.http."""

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import write_model

ECHO_ARGS_CONFIG = """
name: "echo_args"
backend: "python"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "ARGS" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

ECHO_ARGS_MODEL = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.args = dict(args)

    def execute(self, requests):
        payload = json.dumps(self.args).encode()
        out = np.array([payload], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("ARGS", out)]) for _ in requests]
"""

ERRORS_CONFIG = """
name: "errors"
backend: "python"
input [ { name: "MODE" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

ERRORS_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            if mode == "raise":
                raise ValueError("the model was told to raise")
            if mode == "exit":
                raise SystemExit("the model called sys.exit")
            if mode == "error":
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("per-request error")))
            elif mode == "not_found":
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("no such thing", pb_utils.TritonError.NOT_FOUND)))
            elif mode == "wrong_dtype":
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros(1, np.float64))]))
            elif mode == "missing_output":
                responses.append(pb_utils.InferenceResponse([]))
            elif mode == "too_few":
                return []
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.ones(1, np.float32))]))
        return responses
"""

ASYNC_DLPACK_CONFIG = """
name: "async_dlpack"
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""

ASYNC_DLPACK_MODEL = """
import asyncio
import torch
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.sleep(0)
        responses = []
        for request in requests:
            x = torch.utils.dlpack.from_dlpack(pb_utils.get_input_tensor_by_name(request, "X").to_dlpack())
            y = pb_utils.Tensor.from_dlpack("Y", torch.utils.dlpack.to_dlpack(x * 3))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
"""

FINALIZE_CONFIG = """
name: "finalizer"
backend: "python"
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
parameters { key: "marker" value { string_value: "%s" } }
"""

FINALIZE_MODEL = """
import json
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.marker = config["parameters"]["marker"]["string_value"]

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]

    def finalize(self):
        with open(self.marker, "w") as f:
            f.write("finalized")
"""


@pytest.fixture(scope="module")
def python_models(tmp_path_factory):
    from tests.server_harness import start_server

    repository = tmp_path_factory.mktemp("python_models")
    write_model(repository, "echo_args", ECHO_ARGS_CONFIG, ECHO_ARGS_MODEL)
    write_model(repository, "errors", ERRORS_CONFIG, ERRORS_MODEL)
    write_model(repository, "async_dlpack", ASYNC_DLPACK_CONFIG, ASYNC_DLPACK_MODEL)
    running = start_server([repository], model_control_mode="explicit", load_model=["*"])
    client = httpclient.InferenceServerClient(running.http_url)
    yield running, client, repository
    client.close()
    running.stop()


def _infer_mode(client, mode: str):
    tensor = httpclient.InferInput("MODE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([mode.encode()], dtype=object))
    return client.infer("errors", [tensor])


def _ok(client):
    assert _infer_mode(client, "ok").as_numpy("OUT").tolist() == [1.0]


def test_initialize_receives_tritons_args(python_models):
    _, client, repository = python_models
    tensor = httpclient.InferInput("IN", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, np.float32))
    args = json.loads(client.infer("echo_args", [tensor]).as_numpy("ARGS")[0])
    assert set(args) >= {
        "model_config",
        "model_instance_kind",
        "model_instance_name",
        "model_instance_device_id",
        "model_repository",
        "model_version",
        "model_name",
    }
    assert all(isinstance(v, str) for v in args.values())
    config = json.loads(args["model_config"])
    assert config["name"] == "echo_args" and config["input"][0]["dims"] == [1]
    assert args["model_instance_kind"] == "CPU"
    assert args["model_instance_name"] in ("echo_args_0_0", "echo_args_0_1")
    assert args["model_version"] == "1" and args["model_name"] == "echo_args"
    assert args["model_repository"] == str(repository / "echo_args")


@pytest.mark.parametrize(
    "mode, status, fragment",
    [
        ("raise", 400, "the model was told to raise"),
        ("exit", 400, "the model called sys.exit"),
        ("error", 400, "per-request error"),
        ("not_found", 404, "no such thing"),
        ("wrong_dtype", 400, "declares FP32"),
        ("missing_output", 400, "did not return requested output 'OUT'"),
        ("too_few", 400, "one response per request"),
    ],
)
def test_model_failures_fail_only_that_request(python_models, mode, status, fragment):
    _, client, _ = python_models
    with pytest.raises(InferenceServerException) as caught:
        _infer_mode(client, mode)
    assert fragment in caught.value.message()
    assert caught.value.status() == str(status)
    _ok(client)


def test_async_execute_and_dlpack(python_models):
    _, client, _ = python_models
    tensor = httpclient.InferInput("X", [2, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2], [3, 4]], np.float32))
    np.testing.assert_array_equal(client.infer("async_dlpack", [tensor]).as_numpy("Y"), [[3, 6], [9, 12]])


def test_model_failures_are_counted_in_statistics(python_models):
    _, client, _ = python_models
    before = client.get_inference_statistics("errors")["model_stats"][0]["inference_stats"]
    with pytest.raises(InferenceServerException):
        _infer_mode(client, "error")
    _ok(client)
    after = client.get_inference_statistics("errors")["model_stats"][0]["inference_stats"]
    assert after["fail"]["count"] == before["fail"]["count"] + 1
    assert after["success"]["count"] == before["success"]["count"] + 1


def test_finalize_runs_on_unload(python_models, tmp_path):
    _, client, repository = python_models
    marker = tmp_path / "finalized.txt"
    write_model(repository, "finalizer", FINALIZE_CONFIG % marker, FINALIZE_MODEL)
    client.load_model("finalizer")
    tensor = httpclient.InferInput("X", [1], "INT32")
    tensor.set_data_from_numpy(np.array([7], np.int32))
    assert client.infer("finalizer", [tensor]).as_numpy("Y").tolist() == [7]
    assert not marker.exists()
    client.unload_model("finalizer")
    assert marker.read_text() == "finalized"
    assert not client.is_model_ready("finalizer")
