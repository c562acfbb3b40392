"""Health, metadata, config, repository index and logging routes, through tritonclient and raw HTTP."""

import json

import pytest
from tritonclient.utils import InferenceServerException

from modelgate.core.version import MODELGATE_VERSION
from tests.server.frontends.http.raw_http import post_json, send

# -- health -----------------------------------------------------------------------------------


def test_health_live_and_ready(client, example_server):
    assert client.is_server_live()
    assert client.is_server_ready()
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert send(example_server.http_url, "GET", path).status == 200


def test_model_ready_for_ready_missing_and_versioned_targets(client, example_server):
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("add_sub", "2")
    assert not client.is_model_ready("no_such_model")
    url = example_server.http_url
    assert send(url, "GET", "/v2/models/batched_scale/ready").status == 200
    assert send(url, "GET", "/v2/models/batched_scale/versions/1/ready").status == 200
    assert send(url, "GET", "/v2/models/no_such_model/ready").status == 400
    assert send(url, "GET", "/v2/models/add_sub/versions/9/ready").status == 400


# -- server and model metadata ------------------------------------------------------------------


def test_server_metadata_names_server_version_and_extensions(client, example_server):
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelgate"
    assert metadata["version"] == MODELGATE_VERSION
    for extension in ("binary_tensor_data", "statistics", "model_configuration", "model_repository", "logging"):
        assert extension in metadata["extensions"]
    assert send(example_server.http_url, "GET", "/v2").json() == metadata


def test_model_metadata_lists_tensors_with_wire_datatypes(client):
    metadata = client.get_model_metadata("add_sub")
    assert metadata["name"] == "add_sub"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "python"
    assert metadata["inputs"] == [
        {"name": "INPUT0", "datatype": "FP32", "shape": [4]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [4]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert client.get_model_metadata("add_sub", "1") == metadata


def test_model_metadata_of_batched_and_bytes_models(client):
    batched = client.get_model_metadata("batched_scale")
    assert batched["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, -1]}]
    strings = client.get_model_metadata("string_ops")
    assert strings["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in strings["outputs"]} == {"UPPER": "BYTES", "LENGTH": "INT32"}


def test_model_metadata_lists_every_ready_version(probe_client):
    assert probe_client.get_model_metadata("two_versions")["versions"] == ["1", "2"]
    assert probe_client.get_model_metadata("two_versions", "1")["versions"] == ["1"]


@pytest.mark.parametrize(
    "path, status, fragment",
    [
        ("/v2/models/no_such_model", 404, "unknown model: 'no_such_model'"),
        ("/v2/models/add_sub/versions/3", 404, "Request for unknown model: 'add_sub' version 3 is not found"),
        ("/v2/models/add_sub/versions/abc", 400, "failed to get model version from specified version string 'abc'"),
        ("/v2/models/no_such_model/config", 404, "unknown model"),
        ("/v2/models/add_sub/versions/3/config", 404, "version 3 is not found"),
    ],
)
def test_metadata_and_config_of_missing_targets(example_server, client, path, status, fragment):
    response = send(example_server.http_url, "GET", path)
    assert response.status == status
    assert fragment in response.error
    if path.endswith("no_such_model"):
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("no_such_model")
        assert caught.value.status() == "404"
        assert "unknown model" in caught.value.message()


# -- model configuration ----------------------------------------------------------------------


def test_model_config_is_triton_json(client, example_server):
    config = client.get_model_config("add_sub")
    assert config["name"] == "add_sub"
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 0
    first = config["input"][0]
    assert first["name"] == "INPUT0"
    assert first["data_type"] == "TYPE_FP32"
    assert first["dims"] == [4] and isinstance(first["dims"][0], int)  # not protobuf JSON's "4"
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["instance_group"][0]["count"] == 1
    raw = send(example_server.http_url, "GET", "/v2/models/add_sub/versions/1/config")
    assert raw.status == 200
    assert raw.json() == config
    assert b"maxBatchSize" not in raw.body and b"dataType" not in raw.body


def test_yaml_config_is_served_as_json_with_parameters(client):
    config = client.get_model_config("batched_scale")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [-1]
    assert config["parameters"]["factor"]["string_value"] == "2.0"


# -- repository index -------------------------------------------------------------------------


def test_repository_index_lists_every_example_model(client, example_server):
    index = client.get_model_repository_index()
    rows = {row["name"]: row for row in index}
    assert set(rows) >= {"add_sub", "batched_scale", "string_ops"}
    assert rows["add_sub"]["state"] == "READY"
    assert rows["add_sub"]["version"] == "1"
    ready = post_json(example_server.http_url, "/v2/repository/index", {"ready": True})
    assert ready.status == 200
    assert {row["name"] for row in ready.json()} == {row["name"] for row in index if row.get("state") == "READY"}


def test_repository_index_rejects_a_non_boolean_ready(example_server, assert_serving):
    response = post_json(example_server.http_url, "/v2/repository/index", {"ready": "yes"})
    assert response.status == 400
    assert "'ready' must be a boolean" in response.error
    bad_json = send(example_server.http_url, "POST", "/v2/repository/index", "{oops")
    assert bad_json.status == 400
    assert "request body is not valid JSON" in bad_json.error
    assert_serving()


def test_load_is_refused_outside_explicit_mode(client):
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("add_sub")
    assert caught.value.status() == "501"
    assert "--model-control-mode is 'none'" in caught.value.message()


# -- logging ----------------------------------------------------------------------------------


@pytest.fixture
def restore_log_settings(client):
    before = client.get_log_settings()
    yield before
    client.update_log_settings({k: v for k, v in before.items() if k != "log_file"})
    assert client.get_log_settings() == before


def test_log_settings_read_and_update(client, example_server, restore_log_settings):
    settings = restore_log_settings
    assert {"log_info", "log_warning", "log_error", "log_verbose_level", "log_format"} <= set(settings)
    updated = client.update_log_settings({"log_verbose_level": 2, "log_info": False, "log_format": "ISO8601"})
    assert updated["log_verbose_level"] == 2
    assert updated["log_info"] is False
    assert updated["log_format"] == "ISO8601"
    assert updated["log_error"] == settings["log_error"]  # untouched keys stay
    assert client.get_log_settings() == updated
    assert send(example_server.http_url, "GET", "/v2/logging").json() == updated


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"log_info": "yes"}, "log setting 'log_info' must be a boolean"),
        ({"log_verbose_level": -1}, "'log_verbose_level' must be a non-negative integer"),
        ({"log_format": "xml"}, "'log_format' must be 'default' or 'ISO8601'"),
        ({"log_colour": True}, "unknown log setting 'log_colour'"),
    ],
)
def test_bad_log_settings_are_rejected_and_change_nothing(client, restore_log_settings, change, fragment):
    with pytest.raises(InferenceServerException) as caught:
        client.update_log_settings({"log_error": False, **change})
    assert caught.value.status() == "400"
    assert fragment in caught.value.message()
    assert client.get_log_settings() == restore_log_settings


def test_logging_body_must_be_a_json_object(example_server, assert_serving):
    response = send(example_server.http_url, "POST", "/v2/logging", json.dumps([1, 2]))
    assert response.status == 400
    assert "request body must be a JSON object" in response.error
    assert_serving()


# -- routing ----------------------------------------------------------------------------------


def test_unknown_route_and_wrong_method_are_json_errors(example_server, assert_serving):
    missing = send(example_server.http_url, "GET", "/v2/nothing/here")
    assert missing.status == 404
    assert "GET /v2/nothing/here" in missing.error
    wrong_method = send(example_server.http_url, "GET", "/v2/models/add_sub/infer")
    assert wrong_method.status == 405
    assert "GET /v2/models/add_sub/infer" in wrong_method.error
    assert_serving()
