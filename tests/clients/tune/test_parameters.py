"""tune's table of engine settings is the LLM backend's EngineConfig: names, defaults, bounds and choices.

clients/ may not import the backend, so the table is written twice; this test is where the two meet.
"""

import typing

import pytest
from google.protobuf import text_format
from pydantic import ValidationError

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.clients.tune.model_folder import read_model_folder
from modelgate.clients.tune.parameters import TUNABLE_PARAMETERS, canonical_value
from modelgate.clients.tune.tune_errors import TuneInputError
from modelgate.core.config_files import read_config_file
from tests.server_harness import copy_example_model

PARAMETERS = list(TUNABLE_PARAMETERS.values())


def engine_accepts(name: str, value: str) -> bool:
    try:
        EngineConfig.model_validate({name: value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("parameter", PARAMETERS, ids=lambda p: p.name)
def test_every_tunable_setting_is_an_engine_config_field_with_its_default(parameter):
    field = EngineConfig.model_fields[parameter.name]
    if parameter.default is None:
        assert field.default is None
    else:
        assert canonical_value(parameter.name, str(field.default)) == parameter.default


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.kind in ("int", "float")], ids=lambda p: p.name)
def test_bounds_are_the_engines(parameter):
    low, high = parameter.minimum, parameter.maximum
    step = 1 if parameter.kind == "int" else 1e-6
    edge = low + step if parameter.exclusive_minimum else low
    assert engine_accepts(parameter.name, str(edge)) and canonical_value(parameter.name, str(edge))
    assert not engine_accepts(parameter.name, str(edge - step))
    with pytest.raises(TuneInputError, match="allowed range"):
        canonical_value(parameter.name, str(edge - step))
    if high is not None:
        assert engine_accepts(parameter.name, str(high)) and not engine_accepts(parameter.name, str(high + step))
        with pytest.raises(TuneInputError, match="allowed range"):
            canonical_value(parameter.name, str(high + step))


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.kind == "choice"], ids=lambda p: p.name)
def test_choices_are_the_engines(parameter):
    assert set(parameter.choices) == set(typing.get_args(EngineConfig.model_fields[parameter.name].annotation))


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.kind == "bool"], ids=lambda p: p.name)
def test_booleans_are_the_engines(parameter):
    assert EngineConfig.model_fields[parameter.name].annotation in (bool, "bool")
    assert canonical_value(parameter.name, "True") == "true" and canonical_value(parameter.name, "off") == "false"


def test_values_are_checked_and_spelt_one_way():
    assert canonical_value("max_num_seqs", " 016 ") == "16"
    assert canonical_value("gpu_memory_utilization", "0.90") == "0.9"
    for name, value, says in (
        ("max_num_seqs", "many", "expected an integer"),
        ("kv_cache_dtype", "fp4", "expected one of auto, fp8"),
        ("enforce_eager", "maybe", "expected true or false"),
        ("max_num_sequences", "8", "not an engine setting tune can vary"),
        ("device", "cuda:0", "not an engine setting"),  # the command's --device, never a candidate's
    ):
        with pytest.raises(TuneInputError, match=says):
            canonical_value(name, value)


@pytest.mark.parametrize("max_model_len", [None, "128"])
def test_the_settings_tune_derives_are_the_ones_the_engine_loads_with(tmp_path, max_model_len):
    from modelgate.backends.llm.engine import LLMEngine

    folder = copy_example_model(tmp_path, "tiny_llm")
    config = read_config_file(folder / "config.pbtxt")
    del config.parameters["max_model_len"]
    if max_model_len is not None:
        config.parameters["max_model_len"].string_value = max_model_len
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    settings = read_model_folder(folder).settings
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    engine = LLMEngine(folder / "1", EngineConfig(device="cpu", show_progress=False, **parameters))
    assert int(settings["max_model_len"]) == engine.max_model_len
    assert int(settings["max_num_batched_tokens"]) == engine.scheduler.config.max_num_batched_tokens
