"""Client shared memory is off unless the server allows it; the extensions listed say which."""

import base64

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import copy_example_model, start_server


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("no_shm_models")
    copy_example_model(repository, "add_sub")
    running = start_server([repository])
    yield running
    running.stop()


def test_registration_is_refused_by_default(default_server, regions):
    key, _ = regions(16)
    http = httpclient.InferenceServerClient(default_server.http_url)
    with pytest.raises(InferenceServerException, match="--allow-shared-memory") as raised:
        http.register_system_shared_memory("r", key, 16)
    assert raised.value.status() == "403"
    grpc = grpcclient.InferenceServerClient(default_server.grpc_url)
    with pytest.raises(InferenceServerException, match="--allow-shared-memory") as raised:
        grpc.register_system_shared_memory("r", key, 16)
    assert raised.value.status() == "StatusCode.PERMISSION_DENIED"


def test_inputs_naming_a_region_are_refused_by_default(default_server):
    http = httpclient.InferenceServerClient(default_server.http_url)
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    for tensor in inputs:
        tensor.set_shared_memory("anything", 16)
    with pytest.raises(InferenceServerException, match="not allowed"):
        http.infer("add_sub", inputs)


def test_extensions_say_whether_shared_memory_is_on(default_server, shm_server):
    def extensions(server):
        return httpclient.InferenceServerClient(server.http_url).get_server_metadata()["extensions"]

    assert "system_shared_memory" not in extensions(default_server)
    assert {"system_shared_memory", "cuda_shared_memory"} <= set(extensions(shm_server))


def test_a_cuda_region_on_a_machine_without_that_gpu_is_refused(shm_server):
    http = httpclient.InferenceServerClient(shm_server.http_url)
    with pytest.raises(InferenceServerException, match="device_id 7 is not a GPU"):
        http.register_cuda_shared_memory("gpu", base64.b64encode(bytes(64)).decode(), 7, 64)
    grpc = grpcclient.InferenceServerClient(shm_server.grpc_url)
    with pytest.raises(InferenceServerException, match="raw_handle has 3 bytes"):
        grpc.register_cuda_shared_memory("gpu", base64.b64encode(b"abc"), 0, 64)
