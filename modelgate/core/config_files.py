"""Reading a model's configuration into Triton's `ModelConfig` protobuf message.

`config.pbtxt` is protobuf text format; `config.yaml`/`config.yml`/`config.json` hold the
same message as a mapping (field names as in the proto, snake_case or lowerCamelCase).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from google.protobuf import json_format, text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.bounded_json import loads_bounded
from modelgate.core.errors import ConfigError, InvalidArgumentError
from modelgate.core.version_policy import version_numbers

CONFIG_FILE_NAMES = ("config.pbtxt", "config.yaml", "config.yml", "config.json")


def find_config_file(model_dir: Path) -> Path | None:
    """The first configuration file present in `model_dir`, in CONFIG_FILE_NAMES order."""
    for name in CONFIG_FILE_NAMES:
        candidate = model_dir / name
        if candidate.is_file():
            return candidate
    return None


def parse_config_text(text: str, source: str) -> ModelConfig:
    """Parse `text` (format chosen by the file name in `source`) into a ModelConfig."""
    if source.endswith(".pbtxt"):
        return _parse_pbtxt(text, source)
    return parse_config_mapping(_load_mapping(text, source), source)


def parse_config_mapping(mapping, source: str) -> ModelConfig:
    """A ModelConfig from a dict (JSON/YAML form); unknown fields and bad values are errors."""
    if not isinstance(mapping, dict):
        raise ConfigError(source, "<root>", "must be a mapping of ModelConfig fields")
    config = ModelConfig()
    try:
        json_format.ParseDict(mapping, config)
    except json_format.ParseError as exc:
        raise ConfigError(source, _field_in(str(exc)), _with_allowed_enum_values(str(exc))) from None
    return config


# The model file names that tell the backend where a config names none, as Triton's auto-complete reads them;
# model.py first: a python model may keep an .onnx or .pt file beside it for its own use.
MODEL_FILE_BACKENDS = {
    "model.py": ModelConfig(backend="python"),
    "model.onnx": ModelConfig(platform="onnxruntime_onnx"),
    "model.pt": ModelConfig(platform="pytorch_libtorch"),
    "model.pt2": ModelConfig(platform="torch_export"),
}


def read_model_folder_config(model_dir: Path) -> tuple[ModelConfig, str]:
    """(config, source) from the model folder's config file, or from its model file alone.

    A config (file or none) that names neither `backend` nor `platform` gets the backend of the model file in its
    version folders (`backend_from_model_files`); the backend's auto-complete fills the rest. ConfigError when
    the folder has no config file and no model file that tells its backend.
    """
    path = find_config_file(model_dir)
    if path is not None:
        config = read_config_file(path)
        if not config.backend and not config.platform:
            config.MergeFrom(backend_from_model_files(model_dir, config.default_model_filename) or ModelConfig())
        return config, str(path)
    inferred = backend_from_model_files(model_dir)
    if inferred is None:
        names = " or ".join(f"<version>/{name}" for name in MODEL_FILE_BACKENDS)
        raise ConfigError(str(model_dir), "<file>", f"no config.pbtxt, config.yaml or config.json, and no {names}")
    return inferred, f"{model_dir} (no config file, {_found_model_file(model_dir)} found)"


def backend_from_model_files(model_dir: Path, default_model_filename: str = "") -> ModelConfig | None:
    """The `backend` or `platform` for a model whose config names neither, from its model file: the config's
    `default_model_filename` where it names one of MODEL_FILE_BACKENDS, else the first of them that a version
    folder holds (a file, or a folder: ONNX external data, a model.pt2 package). None when none tells."""
    if default_model_filename in MODEL_FILE_BACKENDS:
        return _copy(MODEL_FILE_BACKENDS[default_model_filename])
    found = _found_model_file(model_dir)
    return _copy(MODEL_FILE_BACKENDS[found]) if found else None


def _found_model_file(model_dir: Path) -> str:
    for filename in MODEL_FILE_BACKENDS:
        if any(p.exists() for p in _version_paths(model_dir, filename)):
            return filename
    return ""


def _copy(config: ModelConfig) -> ModelConfig:
    copy = ModelConfig()
    copy.CopyFrom(config)
    return copy


def _version_paths(model_dir: Path, filename: str) -> list[Path]:
    return [model_dir / str(v) / filename for v in version_numbers(model_dir)]


def read_config_file(path: Path) -> ModelConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "<file>", f"cannot be read: {exc}") from None
    return parse_config_text(text, str(path))


def _parse_pbtxt(text: str, source: str) -> ModelConfig:
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(source, _field_in(str(exc)), _with_allowed_enum_values(str(exc))) from None
    return config


def _load_mapping(text: str, source: str):
    try:
        if source.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            source, "<syntax>", f"not valid {'JSON' if source.endswith('.json') else 'YAML'}: {exc}"
        ) from None


def _field_in(message: str) -> str:
    """Best-effort dotted field path from a protobuf parse error message."""
    at_path = re.search(r" at ModelConfig\.([\w.\[\]]+?)\.?$", message)
    if at_path:
        return at_path.group(1).rstrip(".")
    unknown_at = re.search(r'has no field named "(\w+)" at "ModelConfig\.?([\w.\[\]]*)"', message)
    if unknown_at:  # JSON/YAML: the path of the message holding the unknown field
        return ".".join(p for p in (unknown_at.group(2), unknown_at.group(1)) if p)
    bad_enum = re.search(r"has no value named (\w+)", message)
    if bad_enum:
        field = re.search(rf"(\w+)\s*:\s*{bad_enum.group(1)}", message)
        if field:
            return field.group(1)
    nested = re.findall(r"Failed to parse (\w+) field", message)
    if nested:
        return ".".join(nested)
    named = re.search(r'has no field named "(\w+)"', message) or re.search(r'field "(\w+)"', message)
    return named.group(1) if named else "<syntax>"


def _with_allowed_enum_values(message: str) -> str:
    """Append the allowed names when protobuf rejected an enum value."""
    enum = re.search(r"enum type inference\.([\w.]+)", message) or re.search(
        r'Enum type "inference\.([\w.]+)"', message
    )
    if not enum:
        return message
    descriptor = _find_enum(enum.group(1))
    if descriptor is None:
        return message
    return f"{message} Allowed: {', '.join(v.name for v in descriptor.values)}"


def _find_enum(dotted: str):
    from tritonclient.grpc import model_config_pb2

    file_descriptor = model_config_pb2.DESCRIPTOR
    parts = dotted.split(".")
    if len(parts) == 1:
        return file_descriptor.enum_types_by_name.get(parts[0])
    message = file_descriptor.message_types_by_name.get(parts[0])
    for part in parts[1:-1]:
        message = message.nested_types_by_name.get(part) if message else None
    return message.enum_types_by_name.get(parts[-1]) if message else None


def parse_config_parameter(value, source: str) -> ModelConfig:
    """A load request's `config` parameter: the JSON text of a ModelConfig (or the mapping itself)."""
    if isinstance(value, str):
        try:
            value = loads_bounded(value, "the text")
        except InvalidArgumentError as exc:  # from the network: invalid or nested too deep
            raise ConfigError(source, "<syntax>", exc.message) from None
    return parse_config_mapping(value, source)
