"""RepositoryIndex, RepositoryModelLoad (with config and files) and RepositoryModelUnload in explicit mode."""

import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.server.frontends.grpc.grpc_helpers import (
    A,
    AioStream,
    AwaitableClient,
    B,
    add_sub_inputs,
    by_request_id,
    int32_input,
)
from tests.server_harness import copy_example_model, start_server

DOUBLER_CONFIG = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "X", "data_type": "TYPE_INT32", "dims": [-1]}],
    "output": [{"name": "Y", "data_type": "TYPE_INT32", "dims": [-1]}],
}

DOUBLER_MODEL = b"""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2)])
            for r in requests
        ]
"""

FAILING_MODEL = b"""
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("refuses to initialize")
"""


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("grpc_explicit")
    for example in ("add_sub", "string_ops", "repeat_int32"):
        copy_example_model(repository, example)
    running = start_server(
        [repository], model_control_mode="explicit", load_model=["add_sub"], allow_model_file_uploads=True
    )
    yield running
    running.stop()


@pytest.fixture(params=["sync", "aio"])
async def client(request, explicit_server):
    if request.param == "sync":
        sync = grpcclient.InferenceServerClient(explicit_server.grpc_url)
        yield AwaitableClient(sync)
        sync.close()
    else:
        aio = aioclient.InferenceServerClient(explicit_server.grpc_url)
        yield AwaitableClient(aio)
        await aio.close()


async def index_rows(client) -> dict[str, object]:
    return {row.name: row for row in (await client.get_model_repository_index()).models}


async def expect_status(code: str, fragment: str, call) -> None:
    with pytest.raises(InferenceServerException) as caught:
        await call
    assert caught.value.status() == f"StatusCode.{code}"
    assert fragment in caught.value.message()


async def test_index_lists_loaded_and_unloaded_models(client):
    rows = await index_rows(client)
    assert (rows["add_sub"].version, rows["add_sub"].state) == ("1", "READY")
    assert rows["string_ops"].state == "" and rows["repeat_int32"].state == ""


def test_index_of_ready_models_only(explicit_server):
    with grpc.insecure_channel(explicit_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        rows = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=10).models
    assert [(row.name, row.state) for row in rows] == [("add_sub", "READY")]


async def test_load_then_unload(client):
    await client.load_model("repeat_int32")
    assert await client.is_model_ready("repeat_int32")
    assert (await index_rows(client))["repeat_int32"].state == "READY"
    if client.is_aio:
        stream = AioStream(client.client)
        stream.send("repeat_int32", [int32_input("IN", [8, 9])], request_id="r")
        stream.close()
        assert [r.out() for r in by_request_id(await stream.rest())["r"]] == [8, 9]

    await client.unload_model("repeat_int32")
    assert not await client.is_model_ready("repeat_int32")
    row = (await index_rows(client))["repeat_int32"]
    assert (row.state, row.reason) == ("UNAVAILABLE", "unloaded")
    await expect_status("UNAVAILABLE", "unloaded", client.get_model_metadata("repeat_int32"))
    assert await client.is_model_ready("add_sub")


async def test_load_with_a_config_override_and_reload_without_it(client):
    override = {
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [
            {"name": "UPPER", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "LENGTH", "data_type": "TYPE_INT32", "dims": [-1]},
        ],
        "parameters": {"origin": {"string_value": "override"}},
    }
    await client.load_model("string_ops", config=json.dumps(override))
    config = (await client.get_model_config("string_ops")).config
    assert config.parameters["origin"].string_value == "override"
    text = grpcclient.InferInput("TEXT", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"abc"], dtype=np.object_))
    result = await client.infer("string_ops", [text])
    assert list(result.as_numpy("UPPER")) == [b"ABC"]

    await client.load_model("string_ops")  # back to the repository's config.pbtxt
    assert "origin" not in (await client.get_model_config("string_ops")).config.parameters
    await client.unload_model("string_ops")


async def test_load_a_model_from_files(client):
    name = f"doubler_{'aio' if client.is_aio else 'sync'}"
    await client.load_model(name, config=json.dumps(DOUBLER_CONFIG), files={"file:1/model.py": DOUBLER_MODEL})
    assert await client.is_model_ready(name, "1")
    result = await client.infer(name, [int32_input("X", [1, -2, 30])])
    assert result.as_numpy("Y").tolist() == [2, -4, 60]
    assert (await index_rows(client))[name].state == "READY"
    await client.unload_model(name)
    assert not await client.is_model_ready(name)


async def test_load_failures(client):
    await expect_status(
        "INTERNAL",
        "failed to load 'no_such_model', failed to poll from model repository",
        client.load_model("no_such_model"),
    )
    await expect_status(
        "INVALID_ARGUMENT",
        "need the 'config' parameter too",
        client.load_model("orphan_files", files={"file:1/model.py": DOUBLER_MODEL}),
    )
    await expect_status("INVALID_ARGUMENT", "not valid JSON", client.load_model("add_sub", config="{not json"))
    await expect_status(
        "INVALID_ARGUMENT",
        "file paths must be relative",
        client.load_model("escape", config=json.dumps(DOUBLER_CONFIG), files={"file:../x.py": b""}),
    )
    await expect_status(
        "INVALID_ARGUMENT",  # Triton's code for a version that fails to load
        "refuses to initialize",
        client.load_model("failing", config=json.dumps(DOUBLER_CONFIG), files={"file:1/model.py": FAILING_MODEL}),
    )
    await expect_status("NOT_FOUND", "no_such_model", client.unload_model("no_such_model"))
    result = await client.infer("add_sub", add_sub_inputs(A, B))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
