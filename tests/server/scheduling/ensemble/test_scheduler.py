"""The ensemble scheduler: a request runs as a DAG of steps, through tritonclient HTTP and gRPC.

What is asserted: outputs equal running the steps by hand; independent steps run
concurrently; only requested outputs come back; a failing step fails the request naming
the step and its model; statistics count on every model; tensors pass between steps as
the same arrays.
"""

import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelgate.core.inference_types import InferRequest, InferResponse, InferTensor
from modelgate.server.scheduling.ensemble.graph import build_ensemble_graph
from modelgate.server.scheduling.ensemble.scheduler import EnsembleScheduler
from modelgate.server.statistics import VersionStatistics
from tests.server.lifecycle_models import (
    EXECUTE_RAISES_MODEL,
    infer_x,
    server_error,
    state_of,
    write_scale_model,
    xy_config,
)
from tests.server.scheduling.ensemble.ensemble_models import (
    FP32_X,
    FP32_Y,
    SCALE_STEP,
    ensemble_config,
    model_stats,
    write_diamond,
    write_ensemble,
)
from tests.server_harness import write_model

EXAMPLE = "ensemble_add_sub_scale"


@pytest.fixture
def protocol_client():
    """Factory: protocol_client(running, "http" | "grpc") -> (tritonclient module, client); closed after."""
    opened = []

    def factory(running, protocol: str):
        if protocol == "http":
            module, client = httpclient, httpclient.InferenceServerClient(running.http_url, network_timeout=60)
        else:
            module, client = grpcclient, grpcclient.InferenceServerClient(running.grpc_url)
        opened.append(client)
        return module, client

    yield factory
    for client in opened:
        client.close()


def _infer(module, client, model: str, arrays: dict, outputs=None):
    """The named outputs (all when `outputs` is None) of one request, as {name: array}."""
    inputs = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    requested = None if outputs is None else [module.InferRequestedOutput(n) for n in outputs]
    result = client.infer(model, inputs, outputs=requested)
    response = result.get_response()
    names = (
        [o["name"] for o in response["outputs"]] if isinstance(response, dict) else [o.name for o in response.outputs]
    )
    return {name: result.as_numpy(name) for name in names}


# -- the example ensemble, both protocols ----------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_example_ensemble_equals_its_steps_run_by_hand(example_server, protocol, protocol_client):
    module, client = protocol_client(example_server, protocol)
    a = np.array([1.5, -2.0, 3.25, 40.0], dtype=np.float32)
    b = np.array([0.5, 7.0, -1.0, 2.0], dtype=np.float32)
    result = _infer(module, client, EXAMPLE, {"INPUT0": a, "INPUT1": b})
    by_hand = _infer(module, client, "add_sub", {"INPUT0": a, "INPUT1": b})
    row = _infer(module, client, "add_batch_dim", {"X": by_hand["OUTPUT0"]})["Y"]
    scaled = _infer(module, client, "batched_scale", {"X": row})["Y"]
    assert set(result) == {"SCALED_SUM", "DIFFERENCE"}
    np.testing.assert_array_equal(result["SCALED_SUM"], scaled)
    np.testing.assert_array_equal(result["DIFFERENCE"], by_hand["OUTPUT1"])
    np.testing.assert_array_equal(result["SCALED_SUM"], 2 * (a + b)[None, :])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_only_the_requested_outputs_come_back(example_server, protocol, protocol_client):
    module, client = protocol_client(example_server, protocol)
    a, b = np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    result = _infer(module, client, EXAMPLE, {"INPUT0": a, "INPUT1": b}, outputs=["DIFFERENCE"])
    assert list(result) == ["DIFFERENCE"]
    np.testing.assert_array_equal(result["DIFFERENCE"], a - b)


def test_statistics_count_the_ensemble_and_every_composing_model(example_server, client):
    models = [EXAMPLE, "add_sub", "add_batch_dim", "batched_scale"]
    before = {m: model_stats(client, m) for m in models}
    a = np.zeros(4, dtype=np.float32)
    _infer(httpclient, client, EXAMPLE, {"INPUT0": a, "INPUT1": a})
    after = {m: model_stats(client, m) for m in models}
    for model in models:
        assert after[model]["inference_count"] == before[model]["inference_count"] + 1, model
        success = after[model]["inference_stats"]["success"]["count"]
        assert success == before[model]["inference_stats"]["success"]["count"] + 1, model
    ensemble = after[EXAMPLE]["inference_stats"]
    assert ensemble["queue"]["count"] == before[EXAMPLE]["inference_stats"]["queue"]["count"] + 1
    assert after[EXAMPLE]["execution_count"] == 0  # an ensemble executes nothing itself
    config = client.get_model_config(EXAMPLE)
    assert config["platform"] == "ensemble" and not config.get("backend") and not config.get("instance_group")


def test_an_ensemble_answers_on_a_grpc_stream(example_server):
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(example_server.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        a, b = np.arange(4, dtype=np.float32), np.full(4, 2, dtype=np.float32)
        inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        client.async_stream_infer(EXAMPLE, inputs)
        result, error = results.get(timeout=30)
    finally:
        client.stop_stream()
        client.close()
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("SCALED_SUM"), 2 * (a + b)[None, :])


# -- DAG behaviour -------------------------------------------------------------------------------


def test_independent_steps_run_concurrently(tmp_path, serve):
    """left and right each wait (at most 10 s) for the other's marker: only concurrency lets both finish."""
    repository, markers = tmp_path / "repository", tmp_path / "markers"
    markers.mkdir()
    write_diamond(repository, markers)
    running, client = serve([repository])
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    result = _infer(httpclient, client, "diamond", {"X": x})
    np.testing.assert_array_equal(result["OUT"], x * 1 + x * 2)
    assert {p.name for p in markers.iterdir()} == {"left", "right"}


@pytest.fixture
def chain_repository(tmp_path):
    """scale (versions 1 and 2: Y = 3X + version), raiser (fails for X[0] < 0) and two ensembles."""
    write_scale_model(
        tmp_path,
        "scale",
        versions=(1, 2),
        extra='version_policy { all { } }\nparameters { key: "factor" value { string_value: "3" } }',
    )
    write_model(tmp_path, "raiser", xy_config("raiser"), EXECUTE_RAISES_MODEL)
    steps = [("scale", -1, {"X": "X"}, {"Y": "LATEST"}), ("scale", 1, {"X": "X"}, {"Y": "FIRST"})]
    outputs = [("LATEST", "TYPE_FP32", [-1]), ("FIRST", "TYPE_FP32", [-1])]
    write_ensemble(tmp_path, "versions", ensemble_config("versions", FP32_X, outputs, steps))
    steps = [("scale", -1, {"X": "X"}, {"Y": "scaled"}), ("raiser", -1, {"X": "scaled"}, {"Y": "Y"})]
    write_ensemble(tmp_path, "scale_then_raise", ensemble_config("scale_then_raise", FP32_X, FP32_Y, steps))
    return tmp_path


def test_step_versions_minus_one_is_the_latest(chain_repository, serve):
    running, client = serve([chain_repository])
    x = np.array([1.0, 2.0], dtype=np.float32)
    result = _infer(httpclient, client, "versions", {"X": x})
    np.testing.assert_array_equal(result["LATEST"], 3 * x + 2)
    np.testing.assert_array_equal(result["FIRST"], 3 * x + 1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_failing_step_fails_the_request_naming_its_model(chain_repository, serve, protocol, protocol_client):
    running, http = serve([chain_repository])
    module, client = protocol_client(running, protocol)
    np.testing.assert_array_equal(infer_x(http, "scale_then_raise", [1.0]), [3 * 1.0 + 2])
    fails_before = model_stats(http, "scale_then_raise")["inference_stats"]["fail"]["count"]
    error = server_error(_infer, module, client, "scale_then_raise", {"X": np.array([-1.0], dtype=np.float32)})
    assert "ensemble 'scale_then_raise' step 1 (model 'raiser') failed" in error.message()
    assert "negative input is not allowed" in error.message()
    assert error.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")
    assert model_stats(http, "scale_then_raise")["inference_stats"]["fail"]["count"] == fails_before + 1


def test_a_batched_ensemble_counts_rows_and_batches_no_more_than_its_steps(tmp_path, serve):
    write_scale_model(tmp_path, "scale", max_batch_size=4)
    write_ensemble(tmp_path, "batched", ensemble_config("batched", FP32_X, FP32_Y, SCALE_STEP, max_batch_size=4))
    write_ensemble(tmp_path, "too_big", ensemble_config("too_big", FP32_X, FP32_Y, SCALE_STEP, max_batch_size=8))
    running, client = serve([tmp_path])
    x = np.ones((3, 2), dtype=np.float32)
    np.testing.assert_array_equal(infer_x(client, "batched", x), x + 1)
    assert model_stats(client, "batched")["inference_count"] == 3
    assert (
        "field 'max_batch_size': is 8 but step 0 (model 'scale') allows at most 4" in state_of(client, "too_big", "")[1]
    )


# -- the scheduler itself: no copies --------------------------------------------------------------


async def test_tensors_pass_between_steps_as_the_same_arrays():
    config = _parse(
        ensemble_config(
            "chain",
            FP32_X,
            FP32_Y,
            [
                ("first", -1, {"X": "X"}, {"Y": "middle"}),
                ("second", -1, {"X": "middle"}, {"Y": "Y"}),
            ],
        )
    )
    seen: dict[str, np.ndarray] = {}

    async def infer_step(request: InferRequest) -> InferResponse:
        x = request.inputs["X"].data
        seen[request.model_name] = x
        y = x + 1  # a new array per step
        seen[request.model_name + ".out"] = y
        return InferResponse(request.model_name, "1", outputs=[InferTensor("Y", "FP32", y.shape, y)])

    scheduler = EnsembleScheduler(build_ensemble_graph(config, "test"), VersionStatistics("chain", "1"), infer_step)
    x = np.arange(3, dtype=np.float32)
    request = InferRequest("chain", inputs={"X": InferTensor("X", "FP32", x.shape, x)})
    response = await scheduler.infer(request, 1)
    assert response.error is None
    assert seen["first"] is x
    assert seen["second"] is seen["first.out"]
    assert response.outputs[0].data is seen["second.out"]


def _parse(text: str):
    from google.protobuf import text_format
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    return text_format.Parse(text, ModelConfig())
