"""Ensembles (`platform: "ensemble"`): the DAG of steps through tritonclient HTTP and gRPC.

What is asserted: outputs equal running the steps by hand; independent steps run
concurrently; only requested outputs come back; step failures and invalid ensembles are
reported naming the step, the model or the field; statistics count on every model; in
explicit mode composing models load with the ensemble; tensors pass between steps as the
same arrays.
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
    index_rows,
    infer_x,
    server_error,
    state_of,
    write_scale_model,
    xy_config,
)
from tests.server.scheduling.ensemble.ensemble_models import (
    COUNTED_MODEL,
    ensemble_config,
    write_diamond,
    write_ensemble,
)
from tests.server_harness import copy_example_model, write_model

EXAMPLE = "ensemble_add_sub_scale"
FP32_X = [("X", "TYPE_FP32", [-1])]
FP32_Y = [("Y", "TYPE_FP32", [-1])]


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


def _stats(client, model: str) -> dict:
    return client.get_inference_statistics(model)["model_stats"][0]


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
    before = {m: _stats(client, m) for m in models}
    a = np.zeros(4, dtype=np.float32)
    _infer(httpclient, client, EXAMPLE, {"INPUT0": a, "INPUT1": a})
    after = {m: _stats(client, m) for m in models}
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
    fails_before = _stats(http, "scale_then_raise")["inference_stats"]["fail"]["count"]
    error = server_error(_infer, module, client, "scale_then_raise", {"X": np.array([-1.0], dtype=np.float32)})
    assert "ensemble 'scale_then_raise' step 1 (model 'raiser') failed" in error.message()
    assert "negative input is not allowed" in error.message()
    assert error.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")
    assert _stats(http, "scale_then_raise")["inference_stats"]["fail"]["count"] == fails_before + 1


def test_a_batched_ensemble_counts_rows_and_batches_no_more_than_its_steps(tmp_path, serve):
    write_scale_model(tmp_path, "scale", max_batch_size=4)
    write_ensemble(tmp_path, "batched", ensemble_config("batched", FP32_X, FP32_Y, _SCALE_X, max_batch_size=4))
    write_ensemble(tmp_path, "too_big", ensemble_config("too_big", FP32_X, FP32_Y, _SCALE_X, max_batch_size=8))
    running, client = serve([tmp_path])
    x = np.ones((3, 2), dtype=np.float32)
    np.testing.assert_array_equal(infer_x(client, "batched", x), x + 1)
    assert _stats(client, "batched")["inference_count"] == 3
    assert (
        "field 'max_batch_size': is 8 but step 0 (model 'scale') allows at most 4" in state_of(client, "too_big", "")[1]
    )


# -- invalid ensembles ----------------------------------------------------------------------------

_SCALE_X = [("scale", -1, {"X": "X"}, {"Y": "Y"})]
INVALID_ENSEMBLES = {
    "missing_model": (FP32_X, [("nope", -1, {"X": "X"}, {"Y": "Y"})], ["step[0].model_name", "'nope'"]),
    "unmapped_input": (
        FP32_X,
        _SCALE_X + [("scale", -1, {"X": "ghost"}, {"Y": "Z"})],
        ['step[1].input_map["X"]', "'ghost'", "neither an ensemble input"],
    ),
    "cycle": (
        FP32_X,
        _SCALE_X + [("scale", -1, {"X": "b"}, {"Y": "a"}), ("scale", -1, {"X": "a"}, {"Y": "b"})],
        ["cycle", "step 1 (model 'scale')", "step 2 (model 'scale')"],
    ),
    "wrong_datatype": ([("X", "TYPE_INT32", [-1])], _SCALE_X, ['step[0].input_map["X"]', "TYPE_INT32", "TYPE_FP32"]),
    "unknown_input_name": (FP32_X, [("scale", -1, {"Z": "X"}, {"Y": "Y"})], ["model 'scale' has no input 'Z'"]),
    "decoupled_step": (
        [("X", "TYPE_INT32", [-1])],
        [("repeat_int32", -1, {"IN": "X"}, {"OUT": "Y"})],
        ["'repeat_int32' is decoupled"],
    ),
}


@pytest.fixture
def invalid_repository(tmp_path):
    write_scale_model(tmp_path, "scale")
    copy_example_model(tmp_path, "repeat_int32")
    for name, (inputs, steps, _) in INVALID_ENSEMBLES.items():
        outputs = [("Y", "TYPE_INT32" if name == "decoupled_step" else "TYPE_FP32", [-1])]
        write_ensemble(tmp_path, name, ensemble_config(name, inputs, outputs, steps))
    return tmp_path


def test_invalid_ensembles_are_unavailable_with_a_reason(invalid_repository, serve):
    running, client = serve([invalid_repository])
    rows = index_rows(client)
    for name, (_, _, expected) in INVALID_ENSEMBLES.items():
        row = rows[(name, "")]
        assert row["state"] == "UNAVAILABLE", name
        for words in expected:
            assert words in row["reason"], (name, row["reason"])
        error = server_error(infer_x, client, name, [1.0])
        assert error.status() == "503" and all(w in error.message() for w in expected), (name, error.message())
    np.testing.assert_array_equal(infer_x(client, "scale", [1.0]), [2.0])  # the composing model still serves


def test_config_errors_of_an_ensemble_name_the_field(tmp_path, serve):
    write_scale_model(tmp_path, "scale")
    config = ensemble_config("with_instances", FP32_X, FP32_Y, _SCALE_X, extra="instance_group [ { count: 1 } ]")
    write_ensemble(tmp_path, "with_instances", config)
    config = ensemble_config("unused_input", FP32_X + [("W", "TYPE_FP32", [-1])], FP32_Y, _SCALE_X)
    write_ensemble(tmp_path, "unused_input", config)
    running, client = serve([tmp_path])
    assert "field 'instance_group'" in state_of(client, "with_instances", "")[1]
    assert "field 'input[1].name'" in state_of(client, "unused_input", "")[1]


# -- explicit mode: loading, unloading -------------------------------------------------------------


@pytest.fixture
def explicit_repository(tmp_path):
    write_scale_model(tmp_path, "scale")
    write_ensemble(tmp_path, "via_scale", ensemble_config("via_scale", FP32_X, FP32_Y, _SCALE_X))
    return tmp_path


def test_loading_an_ensemble_loads_its_composing_models_first(explicit_repository, serve):
    running, client = serve([explicit_repository], model_control_mode="explicit")
    assert state_of(client, "scale") is None
    client.load_model("via_scale")
    assert state_of(client, "scale") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "via_scale", [2.0]), [3.0])


def test_unloading_a_composing_model_fails_ensemble_requests_as_unavailable(explicit_repository, serve):
    running, client = serve([explicit_repository], model_control_mode="explicit", load_model=["via_scale"])
    client.unload_model("scale")
    error = server_error(infer_x, client, "via_scale", [2.0])
    assert error.status() == "503"
    assert "ensemble 'via_scale' step 0 (model 'scale') failed" in error.message()
    client.load_model("scale")
    np.testing.assert_array_equal(infer_x(client, "via_scale", [2.0]), [3.0])


def test_unload_dependents_unloads_the_composing_models(explicit_repository, serve):
    running, client = serve([explicit_repository], model_control_mode="explicit", load_model=["via_scale"])
    client.unload_model("via_scale", unload_dependents=True)
    assert state_of(client, "via_scale")[0] == "UNAVAILABLE"
    assert state_of(client, "scale")[0] == "UNAVAILABLE"


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_a_composing_model_loads_once_even_when_its_ensemble_comes_first(tmp_path, serve, mode):
    repository = tmp_path / "repository"
    init_log = tmp_path / "init_log"
    extra = f'parameters {{ key: "init_log" value {{ string_value: "{init_log}" }} }}'
    write_model(repository, "zz_counted", xy_config("zz_counted", extra), COUNTED_MODEL)
    steps = [("zz_counted", -1, {"X": "X"}, {"Y": "Y"})]
    write_ensemble(repository, "aa_ensemble", ensemble_config("aa_ensemble", FP32_X, FP32_Y, steps))
    running, client = serve([repository], model_control_mode=mode)
    np.testing.assert_array_equal(infer_x(client, "aa_ensemble", [4.0]), [4.0])
    if mode == "poll":
        running.run(running.server.poller.poll_once())
    assert init_log.read_text().splitlines() == ["initialized"]


def test_an_ensemble_can_be_a_step_of_another(explicit_repository, serve):
    write_ensemble(
        explicit_repository,
        "outer",
        ensemble_config(
            "outer",
            FP32_X,
            FP32_Y,
            [("via_scale", -1, {"X": "X"}, {"Y": "once"}), ("via_scale", -1, {"X": "once"}, {"Y": "Y"})],
        ),
    )
    running, client = serve([explicit_repository], model_control_mode="explicit", load_model=["outer"])
    np.testing.assert_array_equal(infer_x(client, "outer", [2.0]), [4.0])  # scale: Y = X + 1, twice
    assert _stats(client, "scale")["inference_count"] == 2


def test_ensembles_that_contain_each_other_fail_to_load_instead_of_hanging(tmp_path, serve):
    write_ensemble(tmp_path, "outer", ensemble_config("outer", FP32_X, FP32_Y, [("inner", -1, {"X": "X"}, {"Y": "Y"})]))
    write_ensemble(tmp_path, "inner", ensemble_config("inner", FP32_X, FP32_Y, [("outer", -1, {"X": "X"}, {"Y": "Y"})]))
    running, client = serve([tmp_path])
    for name in ("outer", "inner"):
        state, reason = state_of(client, name, "")
        assert state == "UNAVAILABLE" and "cycle" in reason, reason


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
