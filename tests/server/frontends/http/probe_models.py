"""Python-backend models written into tmp repositories for the HTTP frontend tests."""

import numpy as np
import tritonclient.http as httpclient

from tests.server_harness import write_model

# Wire datatype -> the config's TYPE_* name (BYTES is TYPE_STRING in ModelConfig).
DATATYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}

IDENTITY_CONFIG = """
    name: "{name}"
    backend: "python"
    max_batch_size: 0
    input [ {{ name: "INPUT" data_type: {type} dims: [ -1, -1 ] }} ]
    output [ {{ name: "OUTPUT" data_type: {type} dims: [ -1, -1 ] }} ]
"""

# BF16 has no numpy form in Triton's python backend: such models pass the tensor on through DLPack.
IDENTITY_MODEL = """
    import json

    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            self.is_bf16 = config["input"][0]["data_type"] == "TYPE_BF16"

        def execute(self, requests):
            responses = []
            for request in requests:
                tensor = pb_utils.get_input_tensor_by_name(request, "INPUT")
                if self.is_bf16:
                    output = pb_utils.Tensor.from_dlpack("OUTPUT", tensor.to_dlpack())
                else:
                    output = pb_utils.Tensor("OUTPUT", tensor.as_numpy())
                responses.append(pb_utils.InferenceResponse([output]))
            return responses
"""

ECHO_REQUEST_CONFIG = """
    name: "echo_request"
    backend: "python"
    max_batch_size: 0
    input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ -1 ] } ]
    output [
      { name: "OUTPUT" data_type: TYPE_INT32 dims: [ -1 ] },
      { name: "PARAMETERS" data_type: TYPE_STRING dims: [ 1 ] },
      { name: "REQUEST_ID" data_type: TYPE_STRING dims: [ 1 ] }
    ]
"""

# Returns what the model saw of the request: its parameters (JSON) and its id.
ECHO_REQUEST_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                tensors = [
                    pb_utils.Tensor("OUTPUT", data),
                    pb_utils.Tensor("PARAMETERS", np.array([request.parameters().encode()], dtype=np.object_)),
                    pb_utils.Tensor("REQUEST_ID", np.array([request.request_id().encode()], dtype=np.object_)),
                ]
                responses.append(pb_utils.InferenceResponse(tensors, parameters={"model_says": "hello"}))
            return responses
"""

FLAKY_CONFIG = """
    name: "flaky"
    backend: "python"
    max_batch_size: 4
    input [ { name: "X" data_type: TYPE_INT32 dims: [ -1 ] } ]
    output [ { name: "Y" data_type: TYPE_INT32 dims: [ -1 ] } ]
"""

# Y = X, but a negative element makes a TritonError response and one over 1000 makes execute raise.
FLAKY_MODEL = """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            x = pb_utils.get_input_tensor_by_name(requests[0], "X").as_numpy()
            if (x > 1000).any():
                raise ValueError("flaky refuses values over 1000")
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                if (x < 0).any():
                    error = pb_utils.TritonError("flaky refuses negative values")
                    responses.append(pb_utils.InferenceResponse([], error=error))
                else:
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
            return responses
"""

TWO_VERSIONS_CONFIG = """
    name: "two_versions"
    backend: "python"
    max_batch_size: 0
    version_policy: { all { } }
    input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
    output [ { name: "VERSION" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

TWO_VERSIONS_MODEL = """
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            self.version = int(args["model_version"])

        def execute(self, requests):
            version = np.array([self.version], dtype=np.int32)
            return [pb_utils.InferenceResponse([pb_utils.Tensor("VERSION", version)]) for _ in requests]
"""


BROKEN_CONFIG = """
    name: "broken"
    backend: "python"
    max_batch_size: 0
    input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
    output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# Fails to load, so the server has a model that exists but is not ready.
BROKEN_MODEL = """
    class TritonPythonModel:
        def initialize(self, args):
            raise RuntimeError("broken on purpose")
"""


def identity_name(datatype: str) -> str:
    return f"identity_{datatype.lower()}"


def write_probe_models(repository) -> None:
    for datatype, config_type in DATATYPES.items():
        name = identity_name(datatype)
        write_model(repository, name, IDENTITY_CONFIG.format(name=name, type=config_type), IDENTITY_MODEL)
    write_model(repository, "echo_request", ECHO_REQUEST_CONFIG, ECHO_REQUEST_MODEL)
    write_model(repository, "flaky", FLAKY_CONFIG, FLAKY_MODEL)
    write_model(repository, "two_versions", TWO_VERSIONS_CONFIG, TWO_VERSIONS_MODEL, versions=(1, 2))
    write_model(repository, "broken", BROKEN_CONFIG, BROKEN_MODEL)


def good_add_sub(client) -> None:
    """A valid request to add_sub answered correctly: the server still serves."""
    a = np.array([1, 2, 3, 4], dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a * 10)
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 11)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a * -9)
