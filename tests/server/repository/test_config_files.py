"""config.pbtxt, config.yaml and config.json read into the same ModelConfig; errors name file and field."""

import json

import pytest
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from modelgate.core.config_files import find_config_file, parse_config_mapping, parse_config_text, read_config_file
from modelgate.core.errors import ConfigError

PBTXT = """
name: "m"
backend: "python"
max_batch_size: 8
version_policy { specific { versions: [ 1, 3 ] } }
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]
output [
  { name: "Y" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "Z" data_type: TYPE_INT64 dims: [ 2 ] }
]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [ 4, 8 ] }
parameters { key: "factor" value { string_value: "2.5" } }
"""

YAML = """
name: m
backend: python
max_batch_size: 8
version_policy: {specific: {versions: [1, 3]}}
input:
  - {name: X, data_type: TYPE_FP32, dims: [-1, 3]}
output:
  - {name: Y, data_type: TYPE_STRING, dims: [1]}
  - {name: Z, data_type: TYPE_INT64, dims: [2]}
instance_group: [{count: 2, kind: KIND_CPU}]
dynamic_batching: {max_queue_delay_microseconds: 100, preferred_batch_size: [4, 8]}
parameters:
  factor: {string_value: "2.5"}
"""

# lowerCamelCase field names are the proto's JSON names: accepted as well.
JSON = json.dumps(
    {
        "name": "m",
        "backend": "python",
        "maxBatchSize": 8,
        "versionPolicy": {"specific": {"versions": [1, 3]}},
        "input": [{"name": "X", "dataType": "TYPE_FP32", "dims": [-1, 3]}],
        "output": [
            {"name": "Y", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "Z", "data_type": "TYPE_INT64", "dims": ["2"]},
        ],
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
        "dynamic_batching": {"max_queue_delay_microseconds": "100", "preferred_batch_size": [4, 8]},
        "parameters": {"factor": {"string_value": "2.5"}},
    }
)


def _write_all_formats(tmp_path):
    paths = {}
    for file_name, text in (("config.pbtxt", PBTXT), ("config.yaml", YAML), ("config.json", JSON)):
        folder = tmp_path / file_name.replace(".", "_") / "m"
        folder.mkdir(parents=True)
        paths[file_name] = folder / file_name
        paths[file_name].write_text(text)
    return paths


def test_three_formats_read_into_the_same_message(tmp_path):
    configs = {name: read_config_file(path) for name, path in _write_all_formats(tmp_path).items()}
    reference = configs["config.pbtxt"]
    assert configs["config.yaml"] == reference
    assert configs["config.json"] == reference
    assert reference.max_batch_size == 8
    assert list(reference.version_policy.specific.versions) == [1, 3]
    assert [(t.name, t.data_type, list(t.dims)) for t in reference.output] == [
        ("Y", DataType.TYPE_STRING, [1]),
        ("Z", DataType.TYPE_INT64, [2]),
    ]
    assert reference.instance_group[0].kind == ModelInstanceGroup.KIND_CPU
    assert reference.parameters["factor"].string_value == "2.5"


def test_yml_extension_is_read_as_yaml(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(YAML)
    assert read_config_file(path) == parse_config_text(PBTXT, "m/config.pbtxt")


@pytest.mark.parametrize(
    "present, expected",
    [
        (["config.json", "config.yaml", "config.pbtxt"], "config.pbtxt"),
        (["config.json", "config.yaml"], "config.yaml"),
        (["config.json", "config.yml"], "config.yml"),
        (["config.json"], "config.json"),
        ([], None),
    ],
)
def test_find_config_file_prefers_pbtxt_then_yaml_then_json(tmp_path, present, expected):
    for name in present:
        (tmp_path / name).write_text("")
    (tmp_path / "config.txt").write_text("")  # not a configuration file name
    found = find_config_file(tmp_path)
    assert (found.name if found else None) == expected


def test_a_folder_named_like_a_config_file_is_not_one(tmp_path):
    (tmp_path / "config.pbtxt").mkdir()
    (tmp_path / "config.json").write_text("{}")
    assert find_config_file(tmp_path) == tmp_path / "config.json"


@pytest.mark.parametrize(
    "source, text, field",
    [
        ("m/config.pbtxt", 'name: "m" max_batchsize: 4', "max_batchsize"),
        ("m/config.yaml", "name: m\nmax_batchsize: 4", "max_batchsize"),
        ("m/config.json", '{"name": "m", "max_batchsize": 4}', "max_batchsize"),
        ("m/config.pbtxt", 'input [ { name: "X" dimz: [ 1 ] } ]', "dimz"),
        ("m/config.yaml", "input: [{name: X, dimz: [1]}]", "input[0].dimz"),
        ("m/config.json", '{"instance_group": [{"count": 1}, {"kindd": "KIND_CPU"}]}', "instance_group[1].kindd"),
    ],
)
def test_unknown_field_is_named_with_its_file(source, text, field):
    with pytest.raises(ConfigError) as raised:
        parse_config_text(text, source)
    error = raised.value
    assert error.source == source
    assert error.field == field
    assert error.message.startswith(f"{source}: field '{field}': ")
    assert "has no field named" in error.message


@pytest.mark.parametrize(
    "source, text, field",
    [
        ("m/config.pbtxt", 'input [ { name: "X" data_type: TYPE_FLOAT dims: [ 1 ] } ]', "data_type"),
        ("m/config.yaml", "input: [{name: X, data_type: TYPE_FLOAT, dims: [1]}]", "input[0].data_type"),
        ("m/config.json", '{"input": [{"name": "X", "data_type": "TYPE_FLOAT", "dims": [1]}]}', "input[0].data_type"),
    ],
)
def test_bad_data_type_lists_the_allowed_values(source, text, field):
    with pytest.raises(ConfigError) as raised:
        parse_config_text(text, source)
    message = raised.value.message
    assert raised.value.field == field
    assert source in message and "TYPE_FLOAT" in message
    allowed = message.split("Allowed:")[1]
    assert [v.strip() for v in allowed.split(",")] == list(DataType.keys())


@pytest.mark.parametrize(
    "source, text",
    [
        ("m/config.pbtxt", "instance_group [ { kind: KIND_TPU } ]"),
        ("m/config.yaml", "instance_group: [{kind: KIND_TPU}]"),
    ],
)
def test_bad_nested_enum_lists_its_allowed_values(source, text):
    with pytest.raises(ConfigError) as raised:
        parse_config_text(text, source)
    message = raised.value.message
    assert raised.value.field.endswith("kind")
    assert "KIND_TPU" in message
    for allowed in ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"):
        assert allowed in message.split("Allowed:")[1]


@pytest.mark.parametrize(
    "source, text, fragment",
    [
        ("m/config.yaml", "input: [name: X", "not valid YAML"),
        ("m/config.json", '{"name": "m",', "not valid JSON"),
        ("m/config.pbtxt", 'name: "m" input [ { ', ""),
    ],
)
def test_syntax_errors_name_the_file(source, text, fragment):
    with pytest.raises(ConfigError) as raised:
        parse_config_text(text, source)
    assert raised.value.source == source
    assert raised.value.message.startswith(source)
    assert fragment in raised.value.message


@pytest.mark.parametrize("value", [[1, 2], "just text", 3, None])
def test_a_config_that_is_not_a_mapping_is_refused(value):
    with pytest.raises(ConfigError) as raised:
        parse_config_mapping(value, "load request")
    assert raised.value.field == "<root>"
    assert "mapping" in raised.value.message


def test_a_yaml_list_file_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- name: m\n")
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert raised.value.source == str(path)


def test_an_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b'name: "\xff\xfe"')  # not UTF-8
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert raised.value.source == str(path)
    assert raised.value.field == "<file>"
    assert "cannot be read" in raised.value.message


def test_an_empty_file_is_an_empty_config(tmp_path):
    pbtxt = tmp_path / "config.pbtxt"
    pbtxt.write_text("# only a comment\n")
    assert read_config_file(pbtxt) == ModelConfig()
