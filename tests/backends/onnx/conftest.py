"""One server over a repository of small ONNX models (some of them broken on purpose), and its clients."""

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.backends.onnx.onnx_models import add_model
from tests.server_harness import copy_example_model, start_server

ONE_THREAD = 'parameters { key: "intra_op_thread_count" value { string_value: "1" } }'

BATCHED_CONFIG = f"""
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    dynamic_batching {{ max_queue_delay_microseconds: 2000000 }}
    {ONE_THREAD}
"""

# Batches of exactly max_batch_size go out at once; the long window only makes sure they form.
STRINGS_BATCHED_CONFIG = """
    backend: "onnxruntime"
    max_batch_size: 3
    dynamic_batching { max_queue_delay_microseconds: 2000000 }
"""

TWO_OUTPUTS_BATCHED_CONFIG = """
    backend: "onnxruntime"
    max_batch_size: 2
    dynamic_batching { max_queue_delay_microseconds: 2000000 }
"""

PARTIAL_CONFIG = """
    backend: "onnxruntime"
    max_batch_size: 8
    input [ { name: "X" } ]
    output [ { name: "ROWS" } ]
"""

WRONG_TYPE_CONFIG = """
    platform: "onnxruntime_onnx"
    input [ { name: "INPUT" data_type: TYPE_INT32 } ]
"""

WRONG_DIMS_CONFIG = """
    platform: "onnxruntime_onnx"
    output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

CANNOT_BATCH_CONFIG = """
    platform: "onnxruntime_onnx"
    max_batch_size: 4
"""


@pytest.fixture(scope="session")
def onnx_server(tmp_path_factory):
    """simple_onnx (the example, no config), graphs of each kind without configs, a partial config,
    `batched`, `strings_batched`, `two_outputs_batched` (2 s batching windows) and three models whose configs
    contradict their graphs."""
    repository = tmp_path_factory.mktemp("onnx_models")
    copy_example_model(repository, "simple_onnx")
    for graph in ("strings", "fp16", "bf16", "int64", "two_outputs", "reshape", "fixed_batch"):
        add_model(repository, graph, graph)
    add_model(repository, "batched", "simple", BATCHED_CONFIG)
    add_model(repository, "strings_batched", "strings", STRINGS_BATCHED_CONFIG)
    add_model(repository, "two_outputs_batched", "two_outputs", TWO_OUTPUTS_BATCHED_CONFIG)
    add_model(repository, "partial", "two_outputs", PARTIAL_CONFIG)
    add_model(repository, "wrong_type", "simple", WRONG_TYPE_CONFIG)
    add_model(repository, "wrong_dims", "simple", WRONG_DIMS_CONFIG)
    add_model(repository, "cannot_batch", "fixed_batch", CANNOT_BATCH_CONFIG)
    running = start_server([repository])
    yield running
    running.stop()


@pytest.fixture(scope="session")
def http(onnx_server):
    client = httpclient.InferenceServerClient(onnx_server.http_url, concurrency=8, network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc(onnx_server):
    client = grpcclient.InferenceServerClient(onnx_server.grpc_url)
    yield client
    client.close()
