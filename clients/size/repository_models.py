"""A model repository read as the server would load it, without loading anything: each model's config, the
versions it serves and the instances each version asks for.

The server completes a config from its backend (inputs, outputs); none of that changes memory, so this reads
only what does: the backend, the served versions (modelgate/core/version_policy.py), the instance groups with
Triton's defaults (no group: one CPU instance, one GPU instance for an LLM on a GPU machine; count 0 is 1;
KIND_AUTO is a GPU for the backends that run on one) and the instances' names (`<group>_<k>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from modelgate.core.backend_names import GPU_BACKENDS, backend_name
from modelgate.core.config_files import read_model_folder_config
from modelgate.core.errors import ModelgateError
from modelgate.core.memory_rules import LLM_BACKEND
from modelgate.core.version_policy import select_versions, version_numbers

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class WantedInstance:
    name: str  # as the server names it: <group>_<k>, k counting across the group
    kind: str  # "GPU" or "CPU"
    gpu: int | None  # a GPU the group lists; None: the GPU with the most free memory (or the host)


@dataclass(frozen=True)
class ModelVersion:
    """One served version of a model, or a model that cannot be served (`error` says why, as the server would)."""

    name: str
    backend: str
    config: ModelConfig | None = None
    version: int | None = None
    version_dir: Path | None = None
    instances: tuple[WantedInstance, ...] = ()
    error: str | None = None


def read_repository(root: Path) -> list[ModelVersion]:
    """Every model folder of `root` (by name), one entry per served version. NotADirectoryError for a root that
    is not a folder."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    entries = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            entries.extend(_model_versions(model_dir))
        except ModelgateError as exc:
            entries.append(ModelVersion(model_dir.name, "", error=str(exc)))
    return entries


def _model_versions(model_dir: Path) -> list[ModelVersion]:
    config = _read_config(model_dir)
    backend = ENSEMBLE if config.platform == ENSEMBLE else backend_name(config)
    available = version_numbers(model_dir)
    versions = select_versions(config.version_policy, available)
    if not versions:
        error = f"its version_policy selects no version; version folders present: {available or 'none'}"
        return [ModelVersion(config.name, backend, config, error=error)]
    instances = () if backend == ENSEMBLE else tuple(_instances(config, backend))
    return [ModelVersion(config.name, backend, config, v, model_dir / str(v), instances) for v in versions]


def _read_config(model_dir: Path) -> ModelConfig:
    config, _ = read_model_folder_config(model_dir)
    if not config.name:
        config.name = model_dir.name
    return config


def _instances(config: ModelConfig, backend: str) -> list[WantedInstance]:
    groups = list(config.instance_group)
    if not groups:
        # The LLM backend's own default on a GPU machine (a plan always has GPUs); Triton's elsewhere.
        kind = ModelInstanceGroup.KIND_GPU if backend == LLM_BACKEND else ModelInstanceGroup.KIND_CPU
        groups = [ModelInstanceGroup(kind=kind, count=1)]
    instances = []
    for index, group in enumerate(groups):
        is_gpu = group.kind == ModelInstanceGroup.KIND_GPU or (
            group.kind == ModelInstanceGroup.KIND_AUTO and backend in GPU_BACKENDS
        )
        group_name = group.name or f"{config.name}_{index}"
        devices = (list(group.gpus) or [None]) if is_gpu else [None]
        placements = [device for device in devices for _ in range(group.count or 1)]
        instances.extend(
            WantedInstance(f"{group_name}_{k}", "GPU" if is_gpu else "CPU", device)
            for k, device in enumerate(placements)
        )
    return instances
