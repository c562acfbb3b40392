"""The LLM engine's settings from a model instance's spec: its config's parameters, less the server's own."""

from __future__ import annotations

from pydantic import ValidationError

from modelgate.backends.base import InstanceSpec
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.trace_recorder import TRACE_PARAMETERS
from modelgate.core.errors import ConfigError

# Parameters the server reads (its memory ledger), not the engine; `memory_budget_bytes` comes from the ledger.
SERVER_PARAMETERS = ("gpu_memory_bytes", "cpu_memory_bytes", "memory_budget_bytes")


def engine_config_from_spec(spec: InstanceSpec) -> EngineConfig:
    """EngineConfig from the config's parameters; device from the instance group."""
    settings = {
        key: value.string_value
        for key, value in spec.config.parameters.items()
        if key not in TRACE_PARAMETERS and key not in SERVER_PARAMETERS
    }
    if spec.memory_budget_bytes is not None:
        settings["memory_budget_bytes"] = spec.memory_budget_bytes
    if "device" not in settings:
        settings["device"] = f"cuda:{spec.device_id}" if spec.kind == "GPU" else "cpu"
    try:
        return EngineConfig.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"model '{spec.model_name}' config", "parameters", problems) from None
