"""An ensemble's composing models: loaded before it in every control mode, once, and unloaded with it
when asked; ensembles may be steps of each other, but not in a circle."""

import numpy as np
import pytest

from tests.server.lifecycle_models import infer_x, server_error, state_of, write_scale_model, xy_config
from tests.server.scheduling.ensemble.ensemble_models import (
    COUNTED_MODEL,
    FP32_X,
    FP32_Y,
    SCALE_STEP,
    ensemble_config,
    model_stats,
    write_ensemble,
)
from tests.server_harness import write_model


@pytest.fixture
def explicit_repository(tmp_path):
    write_scale_model(tmp_path, "scale")
    write_ensemble(tmp_path, "via_scale", ensemble_config("via_scale", FP32_X, FP32_Y, SCALE_STEP))
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
    assert model_stats(client, "scale")["inference_count"] == 2


def test_ensembles_that_contain_each_other_fail_to_load_instead_of_hanging(tmp_path, serve):
    write_ensemble(tmp_path, "outer", ensemble_config("outer", FP32_X, FP32_Y, [("inner", -1, {"X": "X"}, {"Y": "Y"})]))
    write_ensemble(tmp_path, "inner", ensemble_config("inner", FP32_X, FP32_Y, [("outer", -1, {"X": "X"}, {"Y": "Y"})]))
    running, client = serve([tmp_path])
    for name in ("outer", "inner"):
        state, reason = state_of(client, name, "")
        assert state == "UNAVAILABLE" and "cycle" in reason, reason
