"""Which ModelConfig fields an ensemble has, and which only an ensemble may have.

An ensemble has steps (`ensemble_scheduling`) and nothing of its own to run: no backend and no instance
groups, since its steps run on the composing models' instances. Checked with the rest of a config, before
its steps are (`graph`).
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError
from modelgate.server.scheduling.ensemble.graph import ENSEMBLE_PLATFORM


def check_ensemble_fields(config: ModelConfig, source: str) -> None:
    """Raise ConfigError naming the field when an ensemble lacks steps or has what only other models have,
    or when another model has steps."""
    if config.platform != ENSEMBLE_PLATFORM:
        if config.HasField("ensemble_scheduling"):
            raise ConfigError(source, "ensemble_scheduling", f'is only allowed with platform: "{ENSEMBLE_PLATFORM}"')
        return
    if config.backend:
        raise ConfigError(source, "backend", f"is '{config.backend}'; an ensemble (platform \"ensemble\") has none")
    if config.instance_group:
        raise ConfigError(
            source, "instance_group", "must be empty for an ensemble: its steps run on the composing models' instances"
        )
    if not config.HasField("ensemble_scheduling"):
        raise ConfigError(source, "ensemble_scheduling", 'is required with platform: "ensemble" (the steps to run)')
