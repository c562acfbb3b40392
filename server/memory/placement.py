"""Placing a version's instances on devices and reserving their memory before anything loads.

What an instance needs, in order of trust:
1. what the config declares: model parameter `gpu_memory_bytes` (KIND_GPU) or `cpu_memory_bytes` (KIND_CPU),
   per instance, e.g. "2GiB";
2. for an LLM on a GPU without a declared size: a budget carved from what the GPU has left, as its
   `gpu_memory_utilization` (default 0.9) leaves it: free - (1 - utilization) * limit. The engine sizes its KV
   cache to fit in it (InstanceSpec.memory_budget_bytes);
3. what the last load of this version measured;
4. an estimate: the size of the version's files (a TorchScript or ONNX file is mostly its weights).

A KIND_GPU instance without `gpus` (device ANY_GPU) goes to the GPU with the most free memory, instance by
instance; with `gpus` it goes where told.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec
from modelgate.core.errors import ConfigError, ModelgateError
from modelgate.server.memory.byte_sizes import parse_bytes
from modelgate.server.memory.device_memory import MemoryDevice
from modelgate.server.memory.ledger import Holder, MemoryLedger
from modelgate.server.repository.config_completion import read_model_config
from modelgate.server.repository.layout import RepositoryLayout

ANY_GPU = -1  # an InstanceSpec.device_id still to be chosen
MEMORY_PARAMETERS = {"GPU": "gpu_memory_bytes", "CPU": "cpu_memory_bytes"}
LLM_UTILIZATION_PARAMETER = "gpu_memory_utilization"
DEFAULT_LLM_UTILIZATION = 0.9

_loads = itertools.count(1)


@dataclass
class MemoryPlan:
    """The placed specs of one load of a version and what the ledger holds for them."""

    specs: list[InstanceSpec]
    holders: dict[MemoryDevice, list[Holder]] = field(default_factory=dict)

    @property
    def all_holders(self) -> list[Holder]:
        return [h for holders in self.holders.values() for h in holders]


def plan_memory(ledger: MemoryLedger, config: ModelConfig, specs: list[InstanceSpec]) -> MemoryPlan:
    """Place and reserve every instance; InsufficientMemoryError (nothing kept reserved) when one does not fit,
    ConfigError for a declared size that is not one."""
    load = next(_loads)
    plan = MemoryPlan([])
    declared = {kind: _declared(config, kind) for kind in MEMORY_PARAMETERS}
    try:
        for spec in specs:
            plan.specs.append(_place_one(ledger, config, spec, declared[spec.kind], load, plan))
    except Exception:
        ledger.release(plan.all_holders)
        raise
    return plan


def _place_one(
    ledger: MemoryLedger, config: ModelConfig, spec: InstanceSpec, declared: int | None, load: int, plan: MemoryPlan
) -> InstanceSpec:
    if spec.device_id == ANY_GPU:
        chosen = ledger.most_free_gpu()
        spec = replace(spec, device_id=chosen.id if chosen is not None else 0)
    device = ledger.tracked(spec.kind, spec.device_id)
    if device is None:
        return spec  # not accounted (the host without a CPU limit) or a GPU this machine lacks: the backend says
    holder = Holder(spec.model_name, spec.model_version, spec.instance_name, load)
    if declared is not None:
        count, source, floor = declared, f"declared as {MEMORY_PARAMETERS[spec.kind]}", declared
    elif config.backend == "llm" and spec.kind == "GPU":
        count = int(ledger.free(device) - (1 - _llm_utilization(config)) * ledger.limit(device))
        count, source, floor = max(count, 0), "an LLM's share of what is free", max(count, 0)
    elif (remembered := ledger.remembered(spec.model_name, spec.model_version, spec.kind)) is not None:
        count, source, floor = remembered, "measured at its last load", 0
    else:
        count, source, floor = _files_bytes(spec.version_dir), "estimated from its files", 0
    ledger.reserve(holder, device, count, source, floor)
    plan.holders.setdefault(device, []).append(holder)
    if config.backend == "llm" and spec.kind == "GPU":
        spec = replace(spec, memory_budget_bytes=count)
    return spec


def sized_last(layout: RepositoryLayout, name: str) -> bool:
    """Whether `name` takes what memory the others leave (an LLM without a declared size): load it after them.
    A config that cannot be read says no (its load reports why)."""
    try:
        config, _ = read_model_config(layout.locate(name).path, name, None)
    except ModelgateError:
        return False
    return config.backend == "llm" and MEMORY_PARAMETERS["GPU"] not in config.parameters


def _declared(config: ModelConfig, kind: str) -> int | None:
    name = MEMORY_PARAMETERS[kind]
    if name not in config.parameters:
        return None
    try:
        return parse_bytes(config.parameters[name].string_value)
    except ValueError as exc:
        raise ConfigError(f"model '{config.name}' config", f"parameters.{name}", str(exc)) from None


def _llm_utilization(config: ModelConfig) -> float:
    if LLM_UTILIZATION_PARAMETER not in config.parameters:
        return DEFAULT_LLM_UTILIZATION
    text = config.parameters[LLM_UTILIZATION_PARAMETER].string_value
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ConfigError(
            f"model '{config.name}' config", f"parameters.{LLM_UTILIZATION_PARAMETER}", f"'{text}' is not in (0, 1]"
        )
    return value


def _files_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return folder.stat().st_size if folder.exists() else 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
