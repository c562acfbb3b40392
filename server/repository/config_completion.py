"""From a model folder (or a load request's override) to a complete, validated ModelConfig."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from modelgate.backends.base import Backend, backend_for_config, load_failure_reason
from modelgate.core.backend_names import GPU_BACKENDS
from modelgate.core.config_files import backend_from_model_files, parse_config_parameter, read_model_folder_config
from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import check_file_name_fields, check_override_parameters
from modelgate.core.version_policy import select_versions, version_numbers
from modelgate.server.gpu_devices import visible_gpu_count
from modelgate.server.repository.config_audit import audit_config
from modelgate.server.repository.config_validation import validate_model_config
from modelgate.server.scheduling.ensemble.graph import build_ensemble_graph, is_ensemble


def read_model_config(model_dir: Path, name: str, override: ModelConfig | str | dict | None) -> tuple[ModelConfig, str]:
    """(config, source) from the override (a ModelConfig, or a load request's `config` parameter as sent: JSON
    text or its mapping), the config file, or the model file alone.

    A config that names neither `backend` nor `platform` (an override such as `{"max_batch_size": 16}`, a config
    file without them, no config at all) gets the backend of the model file in its version folders, as Triton's
    auto-complete does (`backend_from_model_files`); the backend's auto-complete then fills the rest.

    Checked here, before any backend (or a python model's auto_complete_config) reads a file:
    an override may set no parameter that names a file, model file names are plain names, and
    no field is set that modelgate does not implement (config_audit.py).
    """
    if override is not None:
        source = f"load request config for '{name}'"
        config = _override_config(override, source)
        check_override_parameters(config, source)
    else:
        config, source = read_model_folder_config(model_dir)
    if not config.name:
        config.name = name
    audit_config(config, source)
    check_file_name_fields(config, source)
    if not config.backend and not config.platform:
        inferred = backend_from_model_files(model_dir, config.default_model_filename)
        if inferred is not None:
            config.MergeFrom(inferred)
    return config, source


def _override_config(override: ModelConfig | str | dict, source: str) -> ModelConfig:
    if isinstance(override, ModelConfig):
        config = ModelConfig()
        config.CopyFrom(override)
        return config
    return parse_config_parameter(override, "load request parameter 'config'")


def complete_model_config(
    config: ModelConfig, source: str, model_dir: Path, name: str
) -> tuple[ModelConfig, Backend | None, list[int]]:
    """Auto-complete from the model, fill Triton's defaults and validate.

    Returns (config, backend, versions to serve). The model's own auto-completion runs with
    the newest version folder the policy selects. An ensemble has no backend (None).
    """
    if is_ensemble(config):
        return _complete_ensemble(config, source, model_dir, name)
    backend = backend_for_config(config, source)
    if not config.backend and backend.name:
        config.backend = backend.name
    versions = select_versions(config.version_policy, version_numbers(model_dir))
    _check_versions(config, source, model_dir, versions)
    newest = model_dir / str(versions[-1]) if versions else None
    try:
        config = backend.auto_complete_config(config, model_dir, newest)
    except ConfigError:
        raise
    except BaseException as exc:  # a model's import may even call sys.exit: report it, keep serving
        raise ConfigError(source, "<auto_complete_config>", load_failure_reason(exc)) from None
    _fill_defaults(config, backend)
    validate_model_config(config, source, name)
    return config, backend, versions


def _complete_ensemble(
    config: ModelConfig, source: str, model_dir: Path, name: str
) -> tuple[ModelConfig, None, list[int]]:
    """An ensemble: no backend, no instances (its steps run on the composing models' instances).

    Its version folders exist (empty) as Triton requires; its steps must form a valid graph
    here, while the composing models are checked when the ensemble loads.
    """
    versions = select_versions(config.version_policy, version_numbers(model_dir))
    _check_versions(config, source, model_dir, versions)
    _fill_version_policy(config)
    validate_model_config(config, source, name)
    build_ensemble_graph(config, source)
    return config, None, versions


def _check_versions(config: ModelConfig, source: str, model_dir: Path, versions: list[int]) -> None:
    if not versions:
        available = version_numbers(model_dir)
        raise ConfigError(
            source,
            "version_policy",
            f"selects no version; version folders present: {available or 'none'} (numeric names like 1/)",
        )
    if config.version_policy.WhichOneof("policy_choice") == "specific":
        missing = sorted(set(config.version_policy.specific.versions) - set(versions))
        if missing:
            raise ConfigError(source, "version_policy.specific.versions", f"versions {missing} have no folder")


def _fill_defaults(config: ModelConfig, backend: Backend) -> None:
    """Defaults Triton fills: latest-1 version policy, one CPU instance group, model filename."""
    _fill_version_policy(config)
    if not config.instance_group:
        config.instance_group.add(count=1, kind=ModelInstanceGroup.KIND_CPU)
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.count == 0:
            group.count = 1
        if group.kind == ModelInstanceGroup.KIND_AUTO:
            # As Triton: GPU instances when GPUs are visible and the backend runs on them.
            uses_gpu = backend.name in GPU_BACKENDS and (group.gpus or visible_gpu_count() > 0)
            group.kind = ModelInstanceGroup.KIND_GPU if uses_gpu else ModelInstanceGroup.KIND_CPU
    if not config.default_model_filename:
        config.default_model_filename = backend.default_model_filename()


def _fill_version_policy(config: ModelConfig) -> None:
    if config.version_policy.WhichOneof("policy_choice") is None:
        config.version_policy.latest.num_versions = 1
