"""Model configurations as the server serves them: three file formats, auto-completion, and errors."""

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.lifecycle_models import AUTO_COMPLETE_MODEL, SCALE_MODEL, index_rows, infer_x, server_error, xy_config
from tests.server_harness import start_server, write_model

YAML = """
name: from_yaml
backend: python
max_batch_size: 2
input: [{name: X, data_type: TYPE_FP32, dims: [-1]}]
output: [{name: Y, data_type: TYPE_FP32, dims: [-1]}]
parameters: {factor: {string_value: "4"}}
"""

JSON = {
    "name": "from_json",
    "backend": "python",
    "max_batch_size": 2,
    "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}],
    "parameters": {"factor": {"string_value": "4"}},
}

# name -> (config text or None, file name, the field the error must name, words it must contain)
BROKEN = {
    "unknown_field": (xy_config("unknown_field", "colour: 3"), "config.pbtxt", "colour", ["has no field named"]),
    "bad_enum": (
        xy_config("bad_enum").replace("TYPE_FP32", "TYPE_FLOAT32", 1),
        "config.pbtxt",
        "data_type",
        ["TYPE_FLOAT32", "Allowed:", "TYPE_FP32", "TYPE_STRING"],
    ),
    "bad_enum_yaml": (
        "name: bad_enum_yaml\nbackend: python\ninstance_group: [{kind: KIND_TPU}]\n",
        "config.yaml",
        "instance_group[0].kind",
        ["KIND_TPU", "KIND_CPU", "KIND_GPU"],
    ),
    "name_mismatch": (xy_config("someone_else"), "config.pbtxt", "name", ["'someone_else'", "'name_mismatch'"]),
    "zero_dim": (
        xy_config("zero_dim").replace("[ -1 ]", "[ 0 ]", 1),
        "config.pbtxt",
        "input[0].dims",
        ["-1 (variable) or > 0"],
    ),
    "negative_dim": (
        xy_config("negative_dim").replace("[ -1 ]", "[ -3 ]", 1),
        "config.pbtxt",
        "input[0].dims",
        ["dimension -3"],
    ),
    "duplicate_input": (
        xy_config("duplicate_input").replace(
            'input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]',
            'input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]',
        ),
        "config.pbtxt",
        "input[1].name",
        ["'X' appears more than once"],
    ),
    "latest_zero": (
        xy_config("latest_zero", "version_policy { latest { num_versions: 0 } }"),
        "config.pbtxt",
        "version_policy.latest.num_versions",
        [">= 1"],
    ),
    "bad_json": ('{"name": "bad_json", "backend": ', "config.json", "<syntax>", ["not valid JSON"]),
}


@pytest.fixture(scope="module")
def config_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("configs")
    pbtxt = xy_config("from_pbtxt", 'parameters { key: "factor" value { string_value: "4" } }', max_batch_size=2)
    write_model(repository, "from_pbtxt", pbtxt, SCALE_MODEL)
    write_model(repository, "from_yaml", YAML, SCALE_MODEL, config_file="config.yaml")
    write_model(repository, "from_json", json.dumps(JSON), SCALE_MODEL, config_file="config.json")
    write_model(repository, "auto", None, AUTO_COMPLETE_MODEL)
    # No backend named: model.py says python, as Triton's auto-complete works it out.
    write_model(repository, "no_backend", xy_config("no_backend").replace('backend: "python"', ""), SCALE_MODEL)
    for name, (text, file_name, _, _) in BROKEN.items():
        write_model(repository, name, text, SCALE_MODEL, config_file=file_name)
    running = start_server([repository])
    client = httpclient.InferenceServerClient(running.http_url, network_timeout=60)
    yield running, client, repository
    client.close()
    running.stop()


def _without_name(config: dict) -> dict:
    """The config with the model's name (also inside instance group names) replaced by NAME."""
    return json.loads(json.dumps(config).replace(config["name"], "NAME"))


def test_the_three_formats_serve_the_same_config(config_server):
    running, client, _ = config_server
    configs = [_without_name(client.get_model_config(name)) for name in ("from_pbtxt", "from_yaml", "from_json")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0]["max_batch_size"] == 2
    assert configs[0]["instance_group"][0]["name"] == "NAME_0"
    for name in ("from_pbtxt", "from_yaml", "from_json"):
        np.testing.assert_array_equal(infer_x(client, name, [[1.0, 2.0]]), [[5.0, 9.0]])


def test_a_model_py_without_config_is_completed_by_the_model(config_server):
    running, client, _ = config_server
    config = client.get_model_config("auto")
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 4
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("A", "TYPE_INT32", [3])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("DOUBLED", "TYPE_INT32", [3])]
    metadata = client.get_model_metadata("auto")
    assert metadata["inputs"] == [{"name": "A", "datatype": "INT32", "shape": [-1, 3]}]
    tensor = httpclient.InferInput("A", [2, 3], "INT32")
    tensor.set_data_from_numpy(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.testing.assert_array_equal(client.infer("auto", [tensor]).as_numpy("DOUBLED"), np.arange(6).reshape(2, 3) * 2)


def test_a_config_naming_no_backend_takes_it_from_the_model_file(config_server):
    running, client, _ = config_server
    assert client.get_model_config("no_backend")["backend"] == "python"
    assert client.is_model_ready("no_backend")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_bad_config_is_unavailable_with_file_field_and_what_is_allowed(config_server, name):
    running, client, repository = config_server
    _, file_name, field, words = BROKEN[name]
    row = index_rows(client)[(name, "")]
    assert row["state"] == "UNAVAILABLE"
    reason = row["reason"]
    assert reason.startswith(f"{repository / name / file_name}: field '{field}': "), reason
    for word in words:
        assert word in reason
    error = server_error(infer_x, client, name, [1.0])
    assert error.status() == "503"
    assert reason in error.message()


def test_bad_configs_do_not_stop_the_good_models(config_server):
    running, client, _ = config_server
    ready = {row["name"] for row in client.get_model_repository_index() if row.get("state") == "READY"}
    assert ready == {"from_pbtxt", "from_yaml", "from_json", "auto", "no_backend"}
    assert not client.is_server_ready()  # strict readiness, Triton's default: the models that failed count
