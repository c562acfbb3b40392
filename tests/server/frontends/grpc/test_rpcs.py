"""Every RPC of inference.GRPCInferenceService through tritonclient.grpc and tritonclient.grpc.aio."""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelgate.core.version import MODELGATE_VERSION
from tests.server.frontends.grpc.grpc_helpers import A, AioStream, B, add_sub_inputs, by_request_id, int32_input

# -- health -----------------------------------------------------------------------------------


async def test_server_live_and_ready(either_client):
    assert await either_client.is_server_live() is True
    # Strict readiness (Triton's default): this server's "broken" model failed to load (tests/server/test_readiness.py)
    assert await either_client.is_server_ready() is False


async def test_model_ready(either_client):
    assert await either_client.is_model_ready("add_sub") is True
    assert await either_client.is_model_ready("add_sub", "1") is True
    assert await either_client.is_model_ready("add_sub", "2") is False
    assert await either_client.is_model_ready("no_such_model") is False
    assert await either_client.is_model_ready("broken") is False


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService"])
def test_grpc_health_check_is_serving(grpc_server, service):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_grpc_health_check_on_an_aio_channel(grpc_server):
    async with grpc.aio.insecure_channel(grpc_server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# -- metadata and configuration ----------------------------------------------------------------


async def test_server_metadata(either_client):
    metadata = await either_client.get_server_metadata()
    assert metadata.name == "modelgate"
    assert metadata.version == MODELGATE_VERSION
    for extension in ("binary_tensor_data", "statistics", "model_configuration", "model_repository", "logging"):
        assert extension in metadata.extensions
    as_json = await either_client.get_server_metadata(as_json=True)
    assert as_json["name"] == "modelgate"


async def test_model_metadata(either_client):
    metadata = await either_client.get_model_metadata("repeat_int32")
    assert metadata.name == "repeat_int32"
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "python"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("IN", "INT32", [-1]),
        ("DELAY_MS", "UINT32", [1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("OUT", "INT32", [1]),
        ("IDX", "UINT32", [1]),
    ]
    batched = await either_client.get_model_metadata("batched_scale", "1")
    assert [(t.name, t.datatype, list(t.shape)) for t in batched.inputs] == [("X", "FP32", [-1, -1])]
    strings = await either_client.get_model_metadata("string_ops")
    assert {t.name: t.datatype for t in strings.outputs} == {"UPPER": "BYTES", "LENGTH": "INT32"}


async def test_model_config(either_client):
    config = (await either_client.get_model_config("repeat_int32")).config
    assert config.name == "repeat_int32"
    assert config.backend == "python"
    assert config.model_transaction_policy.decoupled is True
    assert [i.name for i in config.input] == ["IN", "DELAY_MS"]
    assert config.input[1].optional is True
    batched = (await either_client.get_model_config("batched_scale", "1")).config
    assert batched.max_batch_size == 8
    assert batched.parameters["factor"].string_value == "2.0"
    as_json = await either_client.get_model_config("add_sub", as_json=True)
    assert as_json["config"]["name"] == "add_sub"
    assert [i["name"] for i in as_json["config"]["input"]] == ["INPUT0", "INPUT1"]


# -- inference -----------------------------------------------------------------------------------


async def test_model_infer_with_raw_contents(either_client):
    output = grpcclient.InferRequestedOutput("OUTPUT1")
    result = await either_client.infer("add_sub", add_sub_inputs(A, B), request_id="r-7", outputs=[output])
    response = result.get_response()
    assert response.model_name == "add_sub"
    assert response.model_version == "1"
    assert response.id == "r-7"
    assert [o.name for o in response.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    everything = await either_client.infer("add_sub", add_sub_inputs(A, B))
    np.testing.assert_array_equal(everything.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(everything.as_numpy("OUTPUT1"), A - B)


async def test_model_stream_infer(either_client, grpc_server):
    """One short stream per client; the sync client's own streams are in test_streaming."""
    if not either_client.is_aio:
        stream = grpcclient.InferenceServerClient(grpc_server.grpc_url)
        received = []
        stream.start_stream(callback=lambda result, error: received.append((result, error)), stream_timeout=30)
        stream.async_stream_infer("repeat_int32", [int32_input("IN", [3, 4])], request_id="s")
        stream.stop_stream()
        stream.close()
        assert [e for _, e in received] == [None, None]
        assert [int(r.as_numpy("OUT")[0]) for r, _ in received] == [3, 4]
        return
    stream = AioStream(either_client.client)
    stream.send("repeat_int32", [int32_input("IN", [3, 4])], request_id="s")
    stream.close()
    results = by_request_id(await stream.rest())
    assert [r.out() for r in results["s"]] == [3, 4]


# -- statistics ------------------------------------------------------------------------------------


async def test_model_statistics(either_client):
    before = (await either_client.get_inference_statistics("add_sub")).model_stats[0]
    await either_client.infer("add_sub", add_sub_inputs(A, B))
    after = (await either_client.get_inference_statistics("add_sub", "1")).model_stats[0]
    assert (after.name, after.version) == ("add_sub", "1")
    assert after.inference_count == before.inference_count + 1
    assert after.execution_count == before.execution_count + 1
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    assert after.inference_stats.success.ns > before.inference_stats.success.ns
    assert after.last_inference >= before.last_inference
    everything = await either_client.get_inference_statistics()
    names = {s.name for s in everything.model_stats}
    assert {"add_sub", "repeat_int32", "identity_bf16", "counter"} <= names
    assert "broken" not in names
    as_json = await either_client.get_inference_statistics("add_sub", as_json=True)
    assert as_json["model_stats"][0]["name"] == "add_sub"


# -- repository ------------------------------------------------------------------------------------


async def test_repository_index(either_client):
    rows = {row.name: row for row in (await either_client.get_model_repository_index()).models}
    assert rows["add_sub"].state == "READY"
    assert rows["add_sub"].version == "1"
    assert rows["broken"].state == "UNAVAILABLE"
    assert "broken on purpose" in rows["broken"].reason
    assert {"identity_bytes", "repeat_int32", "thread_sender"} <= set(rows)


async def test_load_and_unload_are_unimplemented_in_mode_none(either_client):
    for call in (either_client.load_model("add_sub"), either_client.unload_model("add_sub")):
        with pytest.raises(InferenceServerException) as caught:
            await call
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "--model-control-mode" in caught.value.message()
    assert await either_client.is_model_ready("add_sub") is True


# -- logging ---------------------------------------------------------------------------------------


@pytest.fixture
def restore_log_settings(grpc_client):
    saved = grpc_client.get_log_settings(as_json=True)["settings"]
    yield
    grpc_client.update_log_settings(
        {
            "log_verbose_level": int(saved["log_verbose_level"]["uint32_param"]),
            "log_info": saved["log_info"]["bool_param"],
        }
    )


async def test_log_settings_get_and_update(either_client, restore_log_settings):
    settings = (await either_client.get_log_settings()).settings
    assert settings["log_format"].string_param == "default"
    assert settings["log_error"].bool_param is True
    updated = await either_client.update_log_settings({"log_verbose_level": 2, "log_info": False})
    assert updated.settings["log_verbose_level"].uint32_param == 2
    assert updated.settings["log_info"].bool_param is False
    read_back = (await either_client.get_log_settings()).settings
    assert read_back["log_verbose_level"].uint32_param == 2
    assert read_back["log_info"].bool_param is False


async def test_bad_log_settings_are_invalid_argument_and_change_nothing(either_client, restore_log_settings):
    with pytest.raises(InferenceServerException) as caught:
        await either_client.update_log_settings({"log_format": "xml"})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "log_format" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        await either_client.update_log_settings({"no_such_setting": True})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert (await either_client.get_log_settings()).settings["log_format"].string_param == "default"
