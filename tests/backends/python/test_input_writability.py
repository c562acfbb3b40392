"""Python models may change their input arrays in place, as in Triton's python backend, whatever the isolation.

The frontends decode raw inputs (gRPC raw_input_contents, HTTP binary data) as read-only views of the request's
bytes; the python backend hands a model writable copies of those, and other backends read them as they are.
"""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.backends.python.test_process_isolation import DOUBLER_MODEL  # doubles X in place
from tests.server_harness import write_model

CONFIG = """
name: "doubler"
backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "isolation" value { string_value: "ISOLATION" } }
"""


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_python_model_doubles_its_input_in_place_over_grpc_and_http_binary(tmp_path, make_server, isolation):
    write_model(tmp_path, "doubler", CONFIG.replace("ISOLATION", isolation), DOUBLER_MODEL)
    running = make_server([tmp_path])
    x = np.arange(6, dtype=np.float32)
    grpc_client = grpcclient.InferenceServerClient(running.grpc_url)
    grpc_input = grpcclient.InferInput("X", [6], "FP32")
    grpc_input.set_data_from_numpy(x)
    np.testing.assert_array_equal(grpc_client.infer("doubler", [grpc_input]).as_numpy("Y"), x * 2)
    grpc_client.close()
    http_client = httpclient.InferenceServerClient(running.http_url)
    http_input = httpclient.InferInput("X", [6], "FP32")
    http_input.set_data_from_numpy(x, binary_data=True)
    np.testing.assert_array_equal(http_client.infer("doubler", [http_input]).as_numpy("Y"), x * 2)
    http_client.close()
