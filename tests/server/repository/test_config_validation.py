"""Validation of a completed ModelConfig: each error names the source, the field and what is allowed."""

import pytest

from modelgate.core.config_files import parse_config_text
from modelgate.core.errors import ConfigError, InvalidArgumentError
from modelgate.server.repository.config_validation import validate_model_config

SOURCE = "/models/m/config.pbtxt"

VALID = """
name: "m"
backend: "python"
max_batch_size: 4
input [
  { name: "A" data_type: TYPE_FP32 dims: [ -1, 2 ] },
  { name: "B" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } }
]
output [ { name: "C" data_type: TYPE_FP32 dims: [ 2 ] } ]
version_policy { latest { num_versions: 2 } }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""


def _config(text: str):
    return parse_config_text(text, SOURCE)


def _error(text: str, name: str = "m") -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        validate_model_config(_config(text), SOURCE, name)
    assert raised.value.source == SOURCE
    assert raised.value.message.startswith(f"{SOURCE}: field '{raised.value.field}': ")
    return raised.value


@pytest.mark.parametrize(
    "text", [VALID, VALID.replace('backend: "python"', 'platform: "pytorch_libtorch"')], ids=["backend", "platform"]
)
def test_a_valid_config_passes_unchanged(text):
    """A backend or a platform alone names what runs the model; validation only reads the config."""
    config = _config(text)
    before = config.SerializeToString(deterministic=True)
    validate_model_config(config, SOURCE, "m")  # raises ConfigError on a problem
    assert config.SerializeToString(deterministic=True) == before


def test_config_errors_are_invalid_arguments():
    error = _error('name: "m"')
    assert isinstance(error, InvalidArgumentError)
    assert error.http_status == 400


def test_name_must_match_the_directory():
    error = _error(VALID.replace('name: "m"', 'name: "other"'))
    assert error.field == "name"
    assert "'other'" in error.message and "directory name 'm'" in error.message


def test_backend_or_platform_is_required():
    error = _error(VALID.replace('backend: "python"', ""))
    assert error.field == "backend"
    assert "required" in error.message and "platform" in error.message


@pytest.mark.parametrize("dims, bad", [("[ 0 ]", 0), ("[ 2, -2 ]", -2), ("[ -1, 4, -7 ]", -7)])
def test_dims_must_be_positive_or_minus_one(dims, bad):
    error = _error(VALID.replace("dims: [ -1, 2 ]", f"dims: {dims}"))
    assert error.field == "input[0].dims"
    assert f"dimension {bad}" in error.message
    assert "-1 (variable) or > 0" in error.message


def test_output_dims_are_checked_too():
    error = _error(VALID.replace("dims: [ 2 ] }", "dims: [ 0 ] }"))
    assert error.field == "output[0].dims"


def test_reshape_dims_are_checked():
    error = _error(VALID.replace("reshape: { shape: [ ] }", "reshape: { shape: [ 0 ] }"))
    assert error.field == "input[1].reshape.shape"


def test_too_many_dims():
    dims = ", ".join(["1"] * 65)
    error = _error(VALID.replace("dims: [ -1, 2 ]", f"dims: [ {dims} ]"))
    assert error.field == "input[0].dims"
    assert "at most 64" in error.message


def test_duplicate_input_names():
    error = _error(VALID.replace('name: "B"', 'name: "A"'))
    assert error.field == "input[1].name"
    assert "'A' appears more than once" in error.message


def test_duplicate_output_names():
    text = VALID.replace(
        'output [ { name: "C" data_type: TYPE_FP32 dims: [ 2 ] } ]',
        'output [ { name: "C" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "C" data_type: TYPE_FP32 dims: [ 1 ] } ]',
    )
    assert _error(text).field == "output[1].name"


def test_an_input_needs_a_name_and_a_data_type():
    assert _error(VALID.replace('name: "A" ', "")).field == "input[0].name"
    error = _error(VALID.replace("data_type: TYPE_FP32 dims: [ -1, 2 ]", "dims: [ -1, 2 ]"))
    assert error.field == "input[0].data_type"
    assert "TYPE_FP32" in error.message


def test_latest_num_versions_zero_is_refused():
    error = _error(VALID.replace("num_versions: 2", "num_versions: 0"))
    assert error.field == "version_policy.latest.num_versions"
    assert ">= 1" in error.message


def test_specific_needs_versions_that_are_not_negative():
    empty = _error(VALID.replace("latest { num_versions: 2 }", "specific { }"))
    assert empty.field == "version_policy.specific.versions"
    assert "at least one" in empty.message
    negative = _error(VALID.replace("latest { num_versions: 2 }", "specific { versions: [ 1, -3 ] }"))
    assert negative.field == "version_policy.specific.versions"
    assert "-3" in negative.message


def test_negative_max_batch_size():
    error = _error(VALID.replace("max_batch_size: 4", "max_batch_size: -1"))
    assert error.field == "max_batch_size"
    assert ">= 0" in error.message


def test_instance_group_count_and_gpus():
    count = _error(VALID.replace("count: 2", "count: -1"))
    assert count.field == "instance_group[0].count"
    gpus = _error(VALID.replace("count: 2 kind: KIND_CPU", "count: 1 kind: KIND_GPU gpus: [ 0, -1 ]"))
    assert gpus.field == "instance_group[0].gpus"
