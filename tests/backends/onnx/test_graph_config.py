"""Auto-complete from the ONNX graph, through the repository's config reading and completion."""

from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError
from modelgate.server.repository.config_completion import complete_model_config, read_model_config
from tests.backends.onnx.onnx_models import add_model


def complete(model_dir: Path) -> ModelConfig:
    config, source = read_model_config(model_dir, model_dir.name, None)
    return complete_model_config(config, source, model_dir, model_dir.name)[0]


def tensors(config: ModelConfig, kind: str) -> list[tuple[str, str, list[int]]]:
    as_dict = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return [(t["name"], t["data_type"], [int(d) for d in t.get("dims", [])]) for t in as_dict.get(kind, [])]


def config_error(model_dir: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        complete(model_dir)
    return caught.value


def test_no_config_file_is_completed_from_the_graph(tmp_path):
    config = complete(add_model(tmp_path, "simple", "simple"))
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert tensors(config, "input") == [("INPUT", "TYPE_FP32", [4])]
    assert tensors(config, "output") == [("OUTPUT", "TYPE_FP32", [4])]
    assert config.default_model_filename == "model.onnx"


def test_strings_and_other_types_map_to_config_types(tmp_path):
    assert tensors(complete(add_model(tmp_path, "s", "strings")), "input") == [("INPUT", "TYPE_STRING", [2])]
    assert tensors(complete(add_model(tmp_path, "h", "fp16")), "output") == [("OUTPUT", "TYPE_FP16", [3])]
    assert tensors(complete(add_model(tmp_path, "b", "bf16")), "input") == [("INPUT", "TYPE_BF16", [3])]
    assert tensors(complete(add_model(tmp_path, "i", "int64")), "input") == [("INPUT", "TYPE_INT64", [3])]


def test_a_fixed_first_dimension_keeps_full_shapes_and_no_batching(tmp_path):
    config = complete(add_model(tmp_path, "fixed", "fixed_batch"))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert tensors(config, "input") == [("X", "TYPE_FP32", [2, 3])]


def test_a_partial_config_is_completed_and_keeps_what_it_states(tmp_path):
    model_dir = add_model(
        tmp_path,
        "partial",
        "simple",
        """
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [ { name: "INPUT" } ]
        instance_group [ { count: 2 kind: KIND_CPU } ]
    """,
    )
    config = complete(model_dir)
    assert config.max_batch_size == 8
    assert not config.HasField("dynamic_batching")  # the user chose the batch size, and no scheduler
    assert tensors(config, "input") == [("INPUT", "TYPE_FP32", [4])]
    assert tensors(config, "output") == [("OUTPUT", "TYPE_FP32", [4])]
    assert config.instance_group[0].count == 2


def test_backend_name_alone_gets_the_platform(tmp_path):
    config = complete(add_model(tmp_path, "by_backend", "simple", 'backend: "onnxruntime"'))
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4


def test_dims_with_the_first_dimension_mean_no_batching(tmp_path):
    model_dir = add_model(
        tmp_path,
        "unbatched",
        "simple",
        """
        backend: "onnxruntime"
        input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
    """,
    )
    config = complete(model_dir)
    assert config.max_batch_size == 0
    assert tensors(config, "output") == [("OUTPUT", "TYPE_FP32", [-1, 4])]


def test_a_listed_subset_of_outputs_is_kept(tmp_path):
    model_dir = add_model(
        tmp_path,
        "subset",
        "two_outputs",
        """
        backend: "onnxruntime"
        output [ { name: "ROWS" } ]
    """,
    )
    config = complete(model_dir)
    assert tensors(config, "output") == [("ROWS", "TYPE_FP32", [1])]
    assert tensors(config, "input") == [("X", "TYPE_FP32", [2])]


@pytest.mark.parametrize(
    "graph, config, field, fragments",
    [
        (
            "simple",
            'input [ { name: "INPUT" data_type: TYPE_INT32 } ]',
            "input[0].data_type",
            ["TYPE_INT32", "has TYPE_FP32", "tensor(float)", "1/model.onnx"],
        ),
        (
            "simple",
            'output [ { name: "OUTPUT" data_type: TYPE_FP16 dims: [ 4 ] } ]',
            "output[0].data_type",
            ["TYPE_FP16", "has TYPE_FP32"],
        ),
        (
            "simple",
            'input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 5 ] } ]',
            "input[0].dims",
            ["[5]", "has [4]", "batch dimension"],
        ),
        (
            "simple",
            'max_batch_size: 2 input [ { name: "INPUT" dims: [ 4, 1 ] } ]',
            "input[0].dims",
            ["[4, 1]", "has [4]"],
        ),
        ("simple", 'input [ { name: "IMAGE" } ]', "input[0].name", ["'IMAGE'", "INPUT"]),
        ("fixed_batch", "max_batch_size: 4", "max_batch_size", ["is 4", "[2, 3]", "max_batch_size: 0"]),
        (
            "simple",
            'parameters { key: "gpu_fallback" value { string_value: "gpu" } }',
            "parameters.gpu_fallback",
            ["'gpu'", "refuse, cpu"],
        ),
        (
            "simple",
            'parameters { key: "intra_op_thread_count" value { string_value: "-2" } }',
            "parameters.intra_op_thread_count",
            ["'-2'", ">= 0"],
        ),
    ],
)
def test_a_config_that_contradicts_the_graph_names_file_field_and_model(tmp_path, graph, config, field, fragments):
    model_dir = add_model(tmp_path, "contradicting", graph, 'platform: "onnxruntime_onnx"\n' + config)
    error = config_error(model_dir)
    assert error.field == field
    assert error.source == str(model_dir / "config.pbtxt")
    for fragment in fragments:
        assert fragment in error.message


def test_a_missing_or_corrupt_model_file_is_named(tmp_path):
    model_dir = add_model(tmp_path, "renamed", "simple", 'backend: "onnxruntime" default_model_filename: "net.onnx"')
    error = config_error(model_dir)
    assert error.field == "default_model_filename" and "1/net.onnx does not exist" in error.message
    corrupt = tmp_path / "corrupt" / "1"
    corrupt.mkdir(parents=True)
    (corrupt / "model.onnx").write_bytes(b"not a protobuf")
    error = config_error(corrupt.parent)
    assert error.field == "<model file>" and "ONNX Runtime cannot load 1/model.onnx" in error.message


def test_a_folder_without_config_or_model_file_names_both_kinds(tmp_path):
    (tmp_path / "empty" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="model.onnx"):
        read_model_config(tmp_path / "empty", "empty", None)
