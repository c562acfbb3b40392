"""`sequence_batching` checked at load and read into the batcher's settings; a request's sequence parameters."""

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError, InvalidArgumentError
from modelgate.server.scheduling.sequence.config_fields import check_sequence_fields
from modelgate.server.scheduling.sequence.correlation import SequenceFlags, read_sequence_flags
from modelgate.server.scheduling.sequence.sequence_config import read_sequence_config

BASE = """
name: "m" backend: "python" max_batch_size: 4
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
START = '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }'


def _config(extra: str) -> ModelConfig:
    return text_format.Parse(BASE + extra, ModelConfig())


REFUSED = [
    (
        'sequence_batching { control_input [ { name: "INPUT" control [ { kind: CONTROL_SEQUENCE_START '
        "int32_false_true: [ 0, 1 ] } ] } ] }",
        "sequence_batching.control_input[0].name",
    ),
    (
        'sequence_batching { control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START '
        "int32_false_true: [ 0, 1 ] fp32_false_true: [ 0, 1 ] } ] } ] }",
        "sequence_batching.control_input[0].control[0]",
    ),
    (
        'sequence_batching { control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_READY '
        "int32_false_true: [ 1 ] } ] } ] }",
        "sequence_batching.control_input[0].control[0]",
    ),
    (
        'sequence_batching { control_input [ { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID '
        "data_type: TYPE_FP32 } ] } ] }",
        "sequence_batching.control_input[0].control[0].data_type",
    ),
    (f"sequence_batching {{ control_input [ {START}, {START} ] }}", "sequence_batching.control_input[1].name"),
    (
        'sequence_batching { state [ { input_name: "S" data_type: TYPE_INT32 dims: [ 1 ] } ] }',
        "sequence_batching.state[0].output_name",
    ),
    (
        'sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [ 1 ] '
        'initial_state { data_type: TYPE_INT32 dims: [ 1 ] data_file: "../secret" } } ] }',
        "sequence_batching.state[0].initial_state[0].data_file",
    ),
    (
        'sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [ 1 ] '
        "initial_state { data_type: TYPE_INT32 dims: [ -1 ] zero_data: true } } ] }",
        "sequence_batching.state[0].initial_state[0].dims",
    ),
    ("sequence_batching { oldest { preferred_batch_size: [ 8 ] } }", "sequence_batching.oldest.preferred_batch_size"),
    (
        "sequence_batching { direct { minimum_slot_utilization: 1.5 } }",
        "sequence_batching.direct.minimum_slot_utilization",
    ),
    ("sequence_batching { } model_transaction_policy { decoupled: true }", "model_transaction_policy.decoupled"),
]


@pytest.mark.parametrize("extra,field", REFUSED)
def test_bad_sequence_batching_is_refused_naming_the_field(extra, field):
    with pytest.raises(ConfigError) as refused:
        check_sequence_fields(_config(extra), "m/config.pbtxt")
    assert refused.value.field == field


def test_framework_backends_are_refused():
    config = _config("sequence_batching { }")
    config.backend = "onnxruntime"
    with pytest.raises(ConfigError, match="python models only") as refused:
        check_sequence_fields(config, "m/config.pbtxt")
    assert refused.value.field == "sequence_batching"


def test_defaults_and_controls_are_read():
    config = _config(
        f"sequence_batching {{ control_input [ {START}, "
        '{ name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] } ] }'
    )
    check_sequence_fields(config, "m/config.pbtxt")
    settings = read_sequence_config(config, None)
    assert (settings.idle_ns, settings.slots_per_instance, settings.is_oldest) == (1_000_000_000, 4, False)
    assert [(c.name, c.kind, c.values) for c in settings.controls] == [
        ("START", "START", (0, 1)),
        ("C", "CORRID", None),
    ]
    assert settings.corrid_datatype.is_bytes


def test_initial_state_file_is_read_and_checked(tmp_path):
    config = _config(
        'sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_FP32 dims: [ 2 ] '
        'initial_state { data_type: TYPE_FP32 dims: [ 2 ] data_file: "init.bin" } } ] }'
    )
    with pytest.raises(ConfigError, match="not a file"):
        read_sequence_config(config, tmp_path)
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "init.bin").write_bytes(np.array([1.5], np.float32).tobytes())
    with pytest.raises(ConfigError, match="has 4 bytes"):
        read_sequence_config(config, tmp_path)
    (tmp_path / "initial_state" / "init.bin").write_bytes(np.array([1.5, 2.5], np.float32).tobytes())
    assert read_sequence_config(config, tmp_path).states[0].initial.tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    "parameters,flags",
    [
        ({}, None),
        ({"sequence_id": 0, "sequence_start": False}, None),
        ({"sequence_id": ""}, None),
        ({"sequence_id": 2**64 - 1, "sequence_end": True}, SequenceFlags(2**64 - 1, False, True)),
        ({"sequence_id": "abc", "sequence_start": True}, SequenceFlags("abc", True, False)),
    ],
)
def test_sequence_parameters_are_read(parameters, flags):
    assert read_sequence_flags(parameters) == flags


@pytest.mark.parametrize(
    "parameters,fragment",
    [
        ({"sequence_id": True}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": -3}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": 2**64}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": 1.5}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": 4, "sequence_start": "yes"}, "'sequence_start' must be a boolean"),
        ({"sequence_start": True}, "need a non-zero"),
    ],
)
def test_bad_sequence_parameters_are_refused(parameters, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        read_sequence_flags(parameters)
