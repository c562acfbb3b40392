"""Invalid ensembles: refused at load, each naming the step, the model or the field.

What is checked where: the ensemble's own fields (`config_fields`, with the rest of its config), its steps
as a graph (`graph`), and the steps against the composing models' configs (`composing_checks`).
"""

import numpy as np
import pytest

from modelgate.core.config_files import parse_config_text
from modelgate.core.errors import ConfigError
from modelgate.server.repository.config_validation import validate_model_config
from tests.server.lifecycle_models import index_rows, infer_x, server_error, state_of, write_scale_model
from tests.server.scheduling.ensemble.ensemble_models import (
    FP32_X,
    FP32_Y,
    SCALE_STEP,
    ensemble_config,
    write_ensemble,
)
from tests.server_harness import copy_example_model

SOURCE = "/models/e/config.pbtxt"
VALID = ensemble_config("e", FP32_X, FP32_Y, SCALE_STEP)


@pytest.mark.parametrize(
    "text, field, words",
    [
        (
            VALID.replace('platform: "ensemble"', 'backend: "python"'),
            "ensemble_scheduling",
            "only allowed with platform",
        ),
        (VALID + 'backend: "python"\n', "backend", 'an ensemble (platform "ensemble") has none'),
        (VALID + "instance_group [ { count: 1 } ]\n", "instance_group", "must be empty for an ensemble"),
        (VALID[: VALID.index("ensemble_scheduling")], "ensemble_scheduling", "is required"),
    ],
)
def test_the_fields_of_an_ensemble_are_checked_with_its_config(text, field, words):
    with pytest.raises(ConfigError) as raised:
        validate_model_config(parse_config_text(text, SOURCE), SOURCE, "e")
    assert raised.value.field == field
    assert words in raised.value.message


INVALID_ENSEMBLES = {
    "missing_model": (FP32_X, [("nope", -1, {"X": "X"}, {"Y": "Y"})], ["step[0].model_name", "'nope'"]),
    "unmapped_input": (
        FP32_X,
        SCALE_STEP + [("scale", -1, {"X": "ghost"}, {"Y": "Z"})],
        ['step[1].input_map["X"]', "'ghost'", "neither an ensemble input"],
    ),
    "cycle": (
        FP32_X,
        SCALE_STEP + [("scale", -1, {"X": "b"}, {"Y": "a"}), ("scale", -1, {"X": "a"}, {"Y": "b"})],
        ["cycle", "step 1 (model 'scale')", "step 2 (model 'scale')"],
    ),
    "wrong_datatype": ([("X", "TYPE_INT32", [-1])], SCALE_STEP, ['step[0].input_map["X"]', "TYPE_INT32", "TYPE_FP32"]),
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
    config = ensemble_config("with_instances", FP32_X, FP32_Y, SCALE_STEP, extra="instance_group [ { count: 1 } ]")
    write_ensemble(tmp_path, "with_instances", config)
    config = ensemble_config("unused_input", FP32_X + [("W", "TYPE_FP32", [-1])], FP32_Y, SCALE_STEP)
    write_ensemble(tmp_path, "unused_input", config)
    running, client = serve([tmp_path])
    assert "field 'instance_group'" in state_of(client, "with_instances", "")[1]
    assert "field 'input[1].name'" in state_of(client, "unused_input", "")[1]
