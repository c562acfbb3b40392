"""The registry of path parameters (modelgate.core.path_parameters) is complete, and its checks hold.

A config parameter that names a file must be in PATH_PARAMETERS, or a load request could set it. This test reads the
source: every module that reads model config parameters (`string_value`, `config.parameters`) is scanned for
identifier-like strings that look like a path's name, and every parameter a backend takes wholesale into a settings
model (the LLM's EngineConfig and TraceConfig) is listed. Each such name must be registered, or be in
NOT_PATH_NAMES with the reason it names no file. A new path parameter therefore fails here until it is registered.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.trace_recorder import TraceConfig
from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import (
    PATH_PARAMETERS,
    check_file_name_fields,
    check_override_parameters,
    is_plain_file_name,
)

ROOT = Path(__file__).resolve().parents[1]
SCANNED_FOLDERS = ("backends", "server", "modelgate/core")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Words in a name that suggest it names a file, a folder or a program.
_PATH_LIKE = re.compile(
    r"file|path|dir|folder|interpreter|exec|env|script|cache|log|socket|url|command|program|binary|library|plugin",
    re.IGNORECASE,
)

# Strings in the scanned modules that look like a path's name but are no config parameter naming a file.
NOT_PATH_NAMES = {
    "logprobs": "an OpenAI request field (llm backend)",
    "CPUExecutionProvider": "an ONNX Runtime provider name",
    "CUDAExecutionProvider": "an ONNX Runtime provider name",
    "execute_timeout_seconds": "python: seconds an execute may run",
    "MODELGATE_CACHE_DIR": "an environment variable of the server's process, set by the operator",
    "XDG_CACHE_HOME": "an environment variable of the server's process, set by the operator",
    "python_envs": "the cache subfolder archives are unpacked into, not a parameter",
    "kv_cache_dtype": "llm: the KV cache's element type",
}

# Modules that take every config parameter into pydantic settings models: the models' fields are parameters.
WHOLESALE_READERS = {"backends/llm/backend.py": (EngineConfig, TraceConfig)}


_NOT_READERS = ("path_parameters.py", "config_audit.py")


def _parameter_readers() -> list[Path]:
    found = []
    for folder in SCANNED_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            # config_audit.py lists ModelConfig's fields (ModelParameter's `string_value` among them), not parameters.
            if path.name in _NOT_READERS:
                continue
            if "string_value" in text or "config.parameters" in text:
                found.append(path)
    return found


def _path_like_strings(path: Path) -> set[str]:
    constants = [node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)]
    return {c for c in constants if isinstance(c, str) and _IDENTIFIER.match(c) and _PATH_LIKE.search(c)}


def _candidate_names() -> dict[str, str]:
    """Every path-like name a parameter reader holds or takes wholesale -> where it was found."""
    found = {name: str(path.relative_to(ROOT)) for path in _parameter_readers() for name in _path_like_strings(path)}
    for reader, models in WHOLESALE_READERS.items():
        for model in models:
            found.update(
                {name: f"{reader} ({model.__name__})" for name in model.model_fields if _PATH_LIKE.search(name)}
            )
    return found


def test_the_scan_sees_the_known_parameter_readers():
    readers = {str(p.relative_to(ROOT)) for p in _parameter_readers()}
    assert {"backends/python/execution_env.py", "backends/llm/backend.py", "backends/onnx/session_config.py"} <= readers


def test_every_path_like_parameter_name_is_registered_or_known_not_to_name_a_file():
    found = _candidate_names()
    unexplained = {
        name: where for name, where in found.items() if name not in set(PATH_PARAMETERS) | set(NOT_PATH_NAMES)
    }
    assert not unexplained, (
        f"{unexplained}: add a parameter that names a file to PATH_PARAMETERS in modelgate/core/path_parameters.py "
        "(load requests may then not set it), or, if it names none, to NOT_PATH_NAMES here with the reason"
    )


def test_modules_that_take_all_parameters_into_settings_are_listed():
    wholesale = {
        str(p.relative_to(ROOT)) for p in _parameter_readers() if re.search(r"\.parameters\.items\(\)", p.read_text())
    }
    assert wholesale == set(WHOLESALE_READERS), "list each settings model such a module validates parameters into"


def test_the_scan_finds_the_registered_parameters_where_backends_read_them():
    # The backends spell them through core's constants, so the scan sees trace_file through TraceConfig's fields.
    assert "trace_file" in _candidate_names() and "trace_file" in TraceConfig.model_fields


def test_the_allow_list_names_no_registered_parameter():
    assert not set(NOT_PATH_NAMES) & set(PATH_PARAMETERS)


@pytest.mark.parametrize("name", sorted(PATH_PARAMETERS))
@pytest.mark.parametrize("spelling", [str, str.upper, str.lower, lambda n: f" {n} "])
def test_an_override_naming_a_path_parameter_is_refused(name, spelling):
    config = ModelConfig(name="m", backend="python")
    config.parameters[spelling(name)].string_value = "/tmp/anything"
    with pytest.raises(ConfigError) as raised:
        check_override_parameters(config, "load request config for 'm'")
    assert f"parameters.{spelling(name)}" in raised.value.message
    assert "a load request may not set a parameter that names a file" in raised.value.message


def test_an_override_with_other_parameters_passes():
    config = ModelConfig(name="m", backend="python")
    config.parameters["factor"].string_value = "2"
    config.parameters["max_num_seqs"].string_value = "4"
    check_override_parameters(config, "load request config for 'm'")


@pytest.mark.parametrize("name", ["model.py", "model.onnx", "model.pt2", "weights-v2.onnx", "a b.py", "..model"])
def test_plain_file_names(name):
    assert is_plain_file_name(name)


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../model.py", "1/model.py", "/etc/passwd", "a\\b.py", "..\\x", " model.py", "m\x00.py"]
)
def test_names_that_are_not_plain(name):
    assert not is_plain_file_name(name)


@pytest.mark.parametrize("field", ["default_model_filename", "cc_model_filenames"])
def test_model_file_name_fields_must_be_plain_names(field):
    config = ModelConfig(name="m", backend="onnxruntime")
    if field == "default_model_filename":
        config.default_model_filename = "../../outside/model.onnx"
    else:
        config.cc_model_filenames["8.0"] = "/abs/model.plan"
    with pytest.raises(ConfigError) as raised:
        check_file_name_fields(config, "config.pbtxt")
    assert f"field '{field}" in raised.value.message and "plain file name" in raised.value.message
