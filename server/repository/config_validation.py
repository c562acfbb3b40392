"""Checks a completed ModelConfig; every error names the source, the field and what is allowed."""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInput, ModelInstanceGroup

from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import check_file_name_fields
from modelgate.server.rate_limiter.instance_needs import check_rate_limiter_fields
from modelgate.server.repository.config_audit import audit_config
from modelgate.server.scheduling.ensemble.config_fields import check_ensemble_fields
from modelgate.server.scheduling.sequence.config_fields import check_sequence_fields
from modelgate.server.warmup.warmup_config import check_warmup_fields

MAX_DIMS = 64
# Image layouts name three dims (without the batch dim), as Triton checks.
_IMAGE_FORMATS = (ModelInput.FORMAT_NHWC, ModelInput.FORMAT_NCHW)


def validate_model_config(config: ModelConfig, source: str, expected_name: str) -> None:
    """Raise ConfigError for the first problem found in `config`."""
    if config.name != expected_name:
        raise ConfigError(
            source, "name", f"is '{config.name}' but must equal the model's directory name '{expected_name}'"
        )
    audit_config(config, source)  # again: auto-completion may have added fields
    check_ensemble_fields(config, source)
    if not config.backend and not config.platform:
        raise ConfigError(source, "backend", "is required (or 'platform'); e.g. backend: \"python\"")
    check_file_name_fields(config, source)  # again: auto-completion may have set the file name
    if config.max_batch_size < 0:
        raise ConfigError(source, "max_batch_size", f"is {config.max_batch_size}; must be >= 0")
    _validate_tensors(config.input, "input", source)
    _validate_tensors(config.output, "output", source)
    _validate_version_policy(config, source)
    _validate_instance_groups(config, source)
    check_rate_limiter_fields(config, source)
    check_warmup_fields(config, source)
    _validate_response_cache(config, source)
    check_sequence_fields(config, source)


def _validate_tensors(tensors, kind: str, source: str) -> None:
    seen: set[str] = set()
    for index, tensor in enumerate(tensors):
        where = f"{kind}[{index}]"
        if not tensor.name:
            raise ConfigError(source, f"{where}.name", "is required")
        if tensor.name in seen:
            raise ConfigError(source, f"{where}.name", f"'{tensor.name}' appears more than once")
        seen.add(tensor.name)
        if tensor.data_type == DataType.TYPE_INVALID:
            raise ConfigError(source, f"{where}.data_type", "is required; e.g. TYPE_FP32, TYPE_STRING")
        _validate_dims(list(tensor.dims), f"{where}.dims", source)
        if kind == "input" and tensor.format in _IMAGE_FORMATS and len(tensor.dims) != 3:
            raise ConfigError(
                source,
                f"{where}.format",
                f"is {ModelInput.Format.Name(tensor.format)}, which needs 3 dims (without the batch dim); "
                f"dims has {len(tensor.dims)}",
            )
        if tensor.HasField("reshape"):
            _validate_dims(list(tensor.reshape.shape), f"{where}.reshape.shape", source)


def _validate_dims(dims: list[int], field: str, source: str) -> None:
    if len(dims) > MAX_DIMS:
        raise ConfigError(source, field, f"has {len(dims)} dimensions; at most {MAX_DIMS} are allowed")
    for dim in dims:
        if dim == 0 or dim < -1:
            raise ConfigError(source, field, f"has dimension {dim}; each must be -1 (variable) or > 0")


def _validate_version_policy(config: ModelConfig, source: str) -> None:
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest" and policy.latest.num_versions < 1:
        raise ConfigError(source, "version_policy.latest.num_versions", "must be >= 1")
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(source, "version_policy.specific.versions", "must list at least one version")
        bad = [v for v in policy.specific.versions if v < 0]
        if bad:
            raise ConfigError(source, "version_policy.specific.versions", f"has {bad}; versions are >= 0")


def _validate_response_cache(config: ModelConfig, source: str) -> None:
    """As Triton: a cached response stands for one request's whole answer, which a decoupled or stateful model
    does not give."""
    if not config.response_cache.enable:
        return
    if config.model_transaction_policy.decoupled:
        raise ConfigError(source, "response_cache.enable", "is not allowed for a decoupled model")
    if config.HasField("sequence_batching"):
        raise ConfigError(source, "response_cache.enable", "is not allowed with sequence_batching (stateful models)")


def _validate_instance_groups(config: ModelConfig, source: str) -> None:
    for index, group in enumerate(config.instance_group):
        if group.kind == ModelInstanceGroup.KIND_MODEL:
            raise ConfigError(
                source,
                f"instance_group[{index}].kind",
                "KIND_MODEL is not supported by modelgate (the model does not place itself); "
                "allowed: KIND_AUTO, KIND_CPU, KIND_GPU",
            )
        if group.count < 0:
            raise ConfigError(source, f"instance_group[{index}].count", f"is {group.count}; must be >= 0")
        bad = [g for g in group.gpus if g < 0]
        if bad:
            raise ConfigError(source, f"instance_group[{index}].gpus", f"has {bad}; GPU ids are >= 0")
