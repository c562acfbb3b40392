"""The model config parameters and fields that name files: one registry, and the checks that use it.

A parameter that names a file or a program (a trace log to write, a Python environment to unpack and run) is the
operator's to set: it is taken from the config file in the model repository only, never from a load request.
A load request's `config` override may replace the whole config, so it must not reach such a parameter at all;
`check_override_parameters` refuses the load, naming the parameter. Fields that name the model file inside a
version folder (`default_model_filename`, `cc_model_filenames`) stay plain names in every config, so no config,
from a file or from a request, can point a backend outside its version folder (`check_file_name_fields`).

Backends take the names below from here, so a new path parameter is added here or not at all; a test walks this
registry through real clients, and another scans the backends for parameter names that look like paths but are
neither here nor in its list of parameters known not to name files.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError

TRACE_FILE = "trace_file"  # llm: the JSON-lines file generation records are appended to
EXECUTION_ENV_PATH = "EXECUTION_ENV_PATH"  # python: a venv/conda folder or archive, unpacked and run
PYTHON_INTERPRETER = "python_interpreter"  # python: the executable a model's stub process runs

# Every config parameter that names a file, a folder or a program -> what it names (for error messages).
PATH_PARAMETERS: dict[str, str] = {
    TRACE_FILE: "the file the LLM backend writes generation records to",
    EXECUTION_ENV_PATH: "the Python environment a python model's process unpacks and runs",
    PYTHON_INTERPRETER: "the Python executable a python model's process runs",
}

# ModelConfig fields naming the model file inside `<model>/<version>/`: plain names only.
FILE_NAME_FIELDS = ("default_model_filename", "cc_model_filenames")

_CASEFOLDED = {name.casefold(): name for name in PATH_PARAMETERS}


def check_override_parameters(config: ModelConfig, source: str) -> None:
    """Refuse a config sent with a load request that sets any path parameter (ConfigError: 400)."""
    for key in config.parameters:
        # Keys are compared case-insensitively: a near-miss spelling is refused too rather than guessed at.
        name = _CASEFOLDED.get(key.strip().casefold())
        if name is not None:
            raise ConfigError(
                source,
                f"parameters.{key}",
                f"names {PATH_PARAMETERS[name]}; a load request may not set a parameter that names a file "
                "(path parameters come only from the config file in the model repository)",
            )


def check_file_name_fields(config: ModelConfig, source: str) -> None:
    """Refuse a model file name that is not a plain name inside the version folder (ConfigError: 400)."""
    if config.default_model_filename and not is_plain_file_name(config.default_model_filename):
        _refuse_file_name(source, "default_model_filename", config.default_model_filename)
    for capability, name in config.cc_model_filenames.items():
        if not is_plain_file_name(name):
            _refuse_file_name(source, f"cc_model_filenames[{capability}]", name)


def is_plain_file_name(name: str) -> bool:
    """True for a single path component: no separator, not '.' or '..', not absolute, no NUL or control."""
    if not name or name in (".", "..") or name != name.strip():
        return False
    if any(ord(character) < 32 for character in name):
        return False
    return len(PurePosixPath(name).parts) == 1 and len(PureWindowsPath(name).parts) == 1


def is_plain_relative_path(path: str) -> bool:
    """True for a relative path of plain names ('a/b.bin'): not absolute, no '..', '\\', NUL or control."""
    if not path or "\\" in path or path.startswith("/"):
        return False
    return all(is_plain_file_name(part) for part in path.split("/"))


def _refuse_file_name(source: str, field: str, name: str) -> None:
    raise ConfigError(
        source, field, f"is '{name}'; it must be a plain file name inside the version folder (no '/', '\\' or '..')"
    )
