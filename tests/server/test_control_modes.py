"""--model-control-mode none and explicit: which models load, and the load/unload API."""

import os
import sys

import numpy as np
import pytest

from tests.server.lifecycle_models import (
    SCALE_MODEL,
    config_json,
    index_rows,
    infer_x,
    raw_request,
    server_error,
    state_of,
    write_scale_model,
)


@pytest.fixture
def two_models(tmp_path):
    write_scale_model(tmp_path, "first")
    write_scale_model(tmp_path, "second")
    return tmp_path


# -- none ----------------------------------------------------------------------------------


def test_none_mode_loads_everything_and_refuses_the_load_api(two_models, serve):
    running, client = serve([two_models])
    assert {n: r["state"] for (n, _), r in index_rows(client).items()} == {"first": "READY", "second": "READY"}
    for call in (client.load_model, client.unload_model):
        error = server_error(call, "first")
        assert error.status() == "501"
        assert "not allowed when --model-control-mode is 'none'" in error.message()
        assert "--model-control-mode explicit" in error.message()
    assert client.is_model_ready("first")  # the refused unload changed nothing
    np.testing.assert_array_equal(infer_x(client, "first", [1.0]), [2.0])


def test_poll_mode_refuses_the_load_api_too(two_models, serve):
    running, client = serve([two_models], model_control_mode="poll", repository_poll_secs=3600)
    error = server_error(client.load_model, "first")
    assert error.status() == "501"
    assert "'poll'" in error.message()


# -- explicit: what loads at start ---------------------------------------------------------------


def test_explicit_mode_loads_only_the_named_models(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", load_model=["second"])
    rows = index_rows(client)
    assert rows[("second", "1")]["state"] == "READY"
    assert rows[("first", "")] == {"name": "first"}  # never loaded: just its name
    assert not client.is_model_ready("first")
    assert server_error(infer_x, client, "first", [1.0]).status() == "404"


def test_explicit_mode_with_star_loads_everything(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", load_model=["*"])
    assert client.is_model_ready("first") and client.is_model_ready("second")


def test_explicit_mode_without_load_model_loads_nothing(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit")
    assert client.is_server_ready()
    assert client.get_model_repository_index() == [{"name": "first"}, {"name": "second"}]
    assert raw_request(running, "POST", "/v2/repository/index", b'{"ready": true}') == (200, [])


def test_a_missing_load_model_does_not_stop_the_server_nor_enter_the_index(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", load_model=["first", "missing"])
    assert client.is_model_ready("first")
    assert "missing" not in {n for (n, _) in index_rows(client)}


# -- explicit: the API -----------------------------------------------------------------------


def test_load_unload_load_cycle(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit")
    client.load_model("first")
    assert client.is_model_ready("first")
    assert state_of(client, "first") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "first", [2.0]), [3.0])

    client.unload_model("first")
    assert not client.is_model_ready("first")
    assert state_of(client, "first") == ("UNAVAILABLE", "unloaded")
    error = server_error(infer_x, client, "first", [2.0])
    assert error.status() == "503"
    assert "unloaded" in error.message()
    assert index_rows(client)[("second", "")] == {"name": "second"}  # the other model was never touched

    client.load_model("first")
    assert state_of(client, "first") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "first", [2.0]), [3.0])


def test_unload_twice_and_unload_of_a_never_loaded_model_succeed(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", load_model=["first"])
    client.unload_model("first")
    client.unload_model("first")
    client.unload_model("second")
    assert state_of(client, "first") == ("UNAVAILABLE", "unloaded")
    assert index_rows(client)[("second", "")] == {"name": "second"}


def test_load_or_unload_of_a_model_no_repository_has_is_not_found(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit")
    load_error = server_error(client.load_model, "missing")
    assert load_error.status() == "500"  # Triton's code for a load that polled nothing
    assert "failed to load 'missing', failed to poll from model repository" in load_error.message()
    assert "'missing' is not in the model repository" in load_error.message()
    unload_error = server_error(client.unload_model, "missing")
    assert unload_error.status() == "404"
    # A refused load leaves no trace: the index is exactly the repository.
    assert client.get_model_repository_index() == [{"name": "first"}, {"name": "second"}]
    assert server_error(infer_x, client, "missing", [1.0]).status() == "404"


def test_reload_with_a_config_override_changes_parameters_and_batching(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", load_model=["first"])
    assert client.get_model_config("first")["max_batch_size"] == 0
    np.testing.assert_array_equal(infer_x(client, "first", [1.0, 2.0]), [2.0, 3.0])

    override = {"parameters": {"factor": {"string_value": "10"}}, "instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    client.load_model("first", config=config_json("first", override, max_batch_size=4))

    config = client.get_model_config("first")
    assert config["max_batch_size"] == 4
    assert config["parameters"]["factor"]["string_value"] == "10"
    assert config["instance_group"][0]["count"] == 2
    assert client.get_model_metadata("first")["inputs"][0]["shape"] == [-1, -1]
    batch = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(infer_x(client, "first", batch), batch * 10 + 1)
    error = server_error(infer_x, client, "first", np.ones((5, 1)))
    assert error.status() == "400" and "max_batch_size 4" in error.message()

    client.load_model("first")  # no override: back to the file's configuration
    assert client.get_model_config("first")["max_batch_size"] == 0
    np.testing.assert_array_equal(infer_x(client, "first", [1.0, 2.0]), [2.0, 3.0])


def test_a_bad_config_override_is_refused_and_the_model_keeps_serving(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", load_model=["first"])
    unknown = server_error(client.load_model, "first", config='{"backend": "python", "max_batchsize": 2}')
    assert unknown.status() == "400"
    assert "load request parameter 'config'" in unknown.message() and "max_batchsize" in unknown.message()

    bad_dims = config_json("first").replace("[-1]", "[0]", 1)
    invalid = server_error(client.load_model, "first", config=bad_dims)
    assert invalid.status() == "400"
    assert "load request config for 'first'" in invalid.message() and "input[0].dims" in invalid.message()

    renamed = server_error(client.load_model, "first", config=config_json("other"))
    assert renamed.status() == "400" and "field 'name'" in renamed.message()

    not_json = server_error(client.load_model, "first", config="{not json")
    assert not_json.status() == "400"

    assert state_of(client, "first") == ("READY", "")
    np.testing.assert_array_equal(infer_x(client, "first", [1.0]), [2.0])


def test_load_with_file_overrides_serves_the_sent_files(two_models, serve):
    running, client = serve(
        [two_models], model_control_mode="explicit", load_model=["first"], allow_model_file_uploads=True
    )
    files = {"file:5/model.py": SCALE_MODEL.encode()}
    client.load_model("first", config=config_json("first"), files=files)
    assert client.get_model_metadata("first")["versions"] == ["5"]  # the repository only has version 1
    np.testing.assert_array_equal(infer_x(client, "first", [1.0]), [6.0])
    assert state_of(client, "first", "1") == ("UNAVAILABLE", "unloaded")
    assert not (two_models / "first" / "5").exists()  # the repository is never written

    client.load_model("first")  # a load without files goes back to the repository's folder
    np.testing.assert_array_equal(infer_x(client, "first", [1.0]), [2.0])


def test_file_overrides_can_load_a_model_that_is_not_in_the_repository(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", allow_model_file_uploads=True)
    client.load_model("sent", config=config_json("sent"), files={"file:1/model.py": SCALE_MODEL.encode()})
    np.testing.assert_array_equal(infer_x(client, "sent", [1.0]), [2.0])
    assert state_of(client, "sent") == ("READY", "")
    client.unload_model("sent")
    assert state_of(client, "sent") == ("UNAVAILABLE", "unloaded")


def test_file_overrides_need_a_config(two_models, serve):
    running, client = serve([two_models], model_control_mode="explicit", allow_model_file_uploads=True)
    error = server_error(client.load_model, "first", files={"file:1/model.py": SCALE_MODEL.encode()})
    assert error.status() == "400"
    assert "need the 'config' parameter" in error.message()
    assert index_rows(client)[("first", "")] == {"name": "first"}


def test_an_edited_model_file_reloads_as_its_new_code(two_models, serve, monkeypatch):
    # Python trusts __pycache__ when size and mtime second match; an edit can keep both.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    running, client = serve([two_models], model_control_mode="explicit", load_model=["first"])
    np.testing.assert_array_equal(infer_x(client, "first", [1.0]), [2.0])

    model_py = two_models / "first" / "1" / "model.py"
    before = model_py.stat()
    edited = SCALE_MODEL.replace("x * self.factor + self.version", "x * self.factor - self.version")
    assert len(edited) == len(SCALE_MODEL)
    model_py.write_text(edited)
    os.utime(model_py, ns=(before.st_atime_ns, before.st_mtime_ns))
    client.load_model("first")

    np.testing.assert_array_equal(infer_x(client, "first", [1.0]), [0.0])
