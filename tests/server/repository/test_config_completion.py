"""From a model folder (or a load request's config) to a complete, validated ModelConfig."""

import pytest
from tritonclient.grpc.model_config_pb2 import DataType, ModelInstanceGroup

from modelgate.core.config_files import parse_config_mapping
from modelgate.core.errors import ConfigError
from modelgate.server.repository.config_completion import complete_model_config, read_model_config
from tests.server.lifecycle_models import AUTO_COMPLETE_MODEL, SCALE_MODEL, xy_config
from tests.server_harness import write_model


def _complete(model_dir, name):
    config, source = read_model_config(model_dir, name, None)
    return complete_model_config(config, source, model_dir, name)


def test_formats_complete_to_the_same_config(tmp_path):
    yaml = """
    name: m
    backend: python
    input: [{name: X, data_type: TYPE_FP32, dims: [-1]}]
    output: [{name: Y, data_type: TYPE_FP32, dims: [-1]}]
    """
    json_text = (
        '{"name": "m", "backend": "python", "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],'
        ' "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}]}'
    )
    completed = []
    for folder, text, file_name in (
        ("a", xy_config("m"), "config.pbtxt"),
        ("b", yaml, "config.yaml"),
        ("c", json_text, "config.json"),
    ):
        model_dir = write_model(tmp_path / folder, "m", text, SCALE_MODEL, config_file=file_name)
        completed.append(_complete(model_dir, "m")[0])
    assert completed[0] == completed[1] == completed[2]


def test_defaults_are_filled_as_triton_fills_them(tmp_path):
    model_dir = write_model(tmp_path, "m", xy_config("m"), SCALE_MODEL)
    config, backend, versions = _complete(model_dir, "m")
    assert backend.name == "python"
    assert versions == [1]
    assert config.version_policy.latest.num_versions == 1
    assert len(config.instance_group) == 1
    group = config.instance_group[0]
    assert (group.name, group.count, group.kind) == ("m_0", 1, ModelInstanceGroup.KIND_CPU)
    assert config.default_model_filename == "model.py"


def test_kind_auto_and_count_zero_become_one_cpu_instance(tmp_path):
    extra = 'instance_group [ { name: "g" kind: KIND_AUTO }, { count: 3 kind: KIND_CPU } ]'
    model_dir = write_model(tmp_path, "m", xy_config("m", extra), SCALE_MODEL)
    config = _complete(model_dir, "m")[0]
    assert [(g.name, g.count, g.kind) for g in config.instance_group] == [
        ("g", 1, ModelInstanceGroup.KIND_CPU),
        ("m_1", 3, ModelInstanceGroup.KIND_CPU),
    ]


def test_the_name_defaults_to_the_directory(tmp_path):
    model_dir = write_model(tmp_path, "unnamed", xy_config("x").replace('name: "x"', ""), SCALE_MODEL)
    config, source = read_model_config(model_dir, "unnamed", None)
    assert config.name == "unnamed"
    assert source == str(model_dir / "config.pbtxt")


def test_no_config_file_but_model_py_is_a_python_model_completed_by_the_model(tmp_path):
    model_dir = write_model(tmp_path, "auto", None, AUTO_COMPLETE_MODEL)
    config, source = read_model_config(model_dir, "auto", None)
    assert config.backend == "python" and config.name == "auto"
    assert "no config file" in source
    config, backend, versions = complete_model_config(config, source, model_dir, "auto")
    assert config.max_batch_size == 4
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("A", DataType.TYPE_INT32, [3])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("DOUBLED", DataType.TYPE_INT32, [3])]
    assert versions == [1]


def test_auto_complete_runs_with_the_newest_selected_version(tmp_path):
    model_dir = write_model(tmp_path, "auto", None, SCALE_MODEL, versions=(1,))
    write_model(tmp_path, "auto", None, AUTO_COMPLETE_MODEL, versions=(2,))
    config = _complete(model_dir, "auto")[0]
    assert [t.name for t in config.input] == ["A"]


def test_auto_complete_conflicting_with_the_config_names_the_hook(tmp_path):
    text = """
    name: "auto"
    backend: "python"
    max_batch_size: 16
    """
    model_dir = write_model(tmp_path, "auto", text, AUTO_COMPLETE_MODEL)
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "auto")
    assert raised.value.field == "<auto_complete_config>"
    assert "max_batch_size 16" in raised.value.message and "max_batch_size 4" in raised.value.message
    assert str(model_dir / "config.pbtxt") in raised.value.message


def test_auto_complete_fills_what_the_config_left_out(tmp_path):
    text = """
    name: "auto"
    backend: "python"
    input [ { name: "A" data_type: TYPE_INT32 dims: [ 3 ] } ]
    """
    model_dir = write_model(tmp_path, "auto", text, AUTO_COMPLETE_MODEL)
    config = _complete(model_dir, "auto")[0]
    assert [t.name for t in config.input] == ["A"]
    assert [t.name for t in config.output] == ["DOUBLED"]


def test_no_config_file_and_no_model_py_is_an_error(tmp_path):
    model_dir = tmp_path / "empty"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.bin").write_bytes(b"")
    with pytest.raises(ConfigError) as raised:
        read_model_config(model_dir, "empty", None)
    assert raised.value.source == str(model_dir)
    assert "config.pbtxt" in raised.value.message and "model.py" in raised.value.message


def test_the_load_request_config_replaces_the_file(tmp_path):
    model_dir = write_model(tmp_path, "m", xy_config("m"), SCALE_MODEL)
    override = parse_config_mapping({"backend": "python", "max_batch_size": 2}, "request")
    config, source = read_model_config(model_dir, "m", override)
    assert config.max_batch_size == 2 and config.name == "m"
    assert not config.input  # nothing of the file is merged in
    assert "load request" in source
    assert override.name == ""  # the caller's message is not modified


def test_missing_backend_names_the_field_and_the_available_backends(tmp_path):
    model_dir = write_model(tmp_path, "m", xy_config("m").replace('backend: "python"', ""), SCALE_MODEL)
    # No model.py (nor any model file that tells a backend): nothing to infer the backend from.
    (model_dir / "1" / "model.py").rename(model_dir / "1" / "scale.py")
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "m")
    assert raised.value.field == "backend"
    assert raised.value.source == str(model_dir / "config.pbtxt")
    assert "python" in raised.value.message


def test_unknown_backend_lists_the_available_ones(tmp_path):
    model_dir = write_model(tmp_path, "m", xy_config("m", backend="tensorflow"), SCALE_MODEL)
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "m")
    assert raised.value.field == "backend"
    assert "'tensorflow'" in raised.value.message
    allowed = raised.value.message.split("allowed:")[1].split(";")[0]
    assert "python" in [name.strip() for name in allowed.split(",")]


def test_name_mismatch_is_reported_for_the_file(tmp_path):
    model_dir = write_model(tmp_path, "m", xy_config("other"), SCALE_MODEL)
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "m")
    assert raised.value.field == "name"
    assert raised.value.source == str(model_dir / "config.pbtxt")


def test_latest_zero_is_refused_even_though_folders_exist(tmp_path):
    extra = "version_policy { latest { num_versions: 0 } }"
    model_dir = write_model(tmp_path, "m", xy_config("m", extra), SCALE_MODEL, versions=(1, 2))
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "m")
    assert raised.value.field == "version_policy.latest.num_versions"


def test_specific_versions_without_a_folder_are_named(tmp_path):
    extra = "version_policy { specific { versions: [ 1, 4, 7 ] } }"
    model_dir = write_model(tmp_path, "m", xy_config("m", extra), SCALE_MODEL, versions=(1, 2))
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "m")
    assert raised.value.field == "version_policy.specific.versions"
    assert "[4, 7]" in raised.value.message


def test_no_version_folder_is_an_error_that_says_what_is_expected(tmp_path):
    model_dir = tmp_path / "m"
    (model_dir / "latest").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(xy_config("m"))
    with pytest.raises(ConfigError) as raised:
        _complete(model_dir, "m")
    assert raised.value.field == "version_policy"
    assert "numeric" in raised.value.message
