"""Placing a version's instances on devices and reserving their memory before anything loads.

What an instance needs (declared, an LLM's share, measured, estimated) follows modelgate/core/memory_rules.py,
which `modelgate size repository` replays to plan a repository before it loads. An LLM on a GPU without a declared
size gets a budget carved from what the GPU has left; its engine sizes its KV cache to fit in it
(InstanceSpec.memory_budget_bytes).

A KIND_GPU instance without `gpus` (device ANY_GPU) goes to the GPU with the most free memory, instance by
instance; with `gpus` it goes where told.

An LLM with N = `tensor_parallel_size` × `pipeline_parallel_size` > 1 ranks runs rank r on GPU first + r
(backends/llm/parallel/): it is placed on N consecutive GPUs (without `gpus`, the run whose least free GPU has
the most free memory) and holds the same bytes on each, one holder per rank: its declared size (per GPU) or the
share the tightest of them leaves.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import InstanceSpec
from modelgate.core.errors import ModelgateError
from modelgate.core.memory_rules import (
    ESTIMATED,
    LLM_SHARE,
    MEASURED,
    MEMORY_PARAMETERS,
    declared_bytes,
    declared_source,
    files_bytes,
    llm_share_bytes,
    llm_utilization,
)
from modelgate.server.memory.device_memory import MemoryDevice
from modelgate.server.memory.ledger import Holder, MemoryLedger
from modelgate.server.repository.config_completion import read_model_config
from modelgate.server.repository.layout import RepositoryLayout

ANY_GPU = -1  # an InstanceSpec.device_id still to be chosen

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
    declared = {kind: declared_bytes(config, kind) for kind in MEMORY_PARAMETERS}
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
    ranks = num_ranks(config) if config.backend == "llm" and spec.kind == "GPU" else 1
    if ranks > 1:
        return _place_ranks(ledger, config, spec, declared, load, plan, ranks)
    if spec.device_id == ANY_GPU:
        chosen = ledger.most_free_gpu()
        spec = replace(spec, device_id=chosen.id if chosen is not None else 0)
    device = ledger.tracked(spec.kind, spec.device_id)
    if device is None:
        return spec  # not accounted (the host without a CPU limit) or a GPU this machine lacks: the backend says
    holder = Holder(spec.model_name, spec.model_version, spec.instance_name, load)
    if declared is not None:
        count, source, floor = declared, declared_source(spec.kind), declared
    elif config.backend == "llm" and spec.kind == "GPU":
        count = llm_share_bytes(ledger.free(device), ledger.limit(device), llm_utilization(config))
        source, floor = LLM_SHARE, count
    elif (remembered := ledger.remembered(spec.model_name, spec.model_version, spec.kind)) is not None:
        count, source, floor = remembered, MEASURED, 0
    else:
        count, source, floor = files_bytes(spec.version_dir), ESTIMATED, 0
    ledger.reserve(holder, device, count, source, floor)
    plan.holders.setdefault(device, []).append(holder)
    if config.backend == "llm" and spec.kind == "GPU":
        spec = replace(spec, memory_budget_bytes=count)
    return spec


def num_ranks(config: ModelConfig) -> int:
    """The LLM's processes, one GPU each: tensor_parallel_size × pipeline_parallel_size."""
    return tensor_parallel_size(config) * pipeline_parallel_size(config)


def tensor_parallel_size(config: ModelConfig) -> int:
    """The LLM's `tensor_parallel_size` parameter; 1 when absent or not a whole number (the engine's settings
    refuse that at load, naming the field)."""
    return _whole_parameter(config, "tensor_parallel_size")


def pipeline_parallel_size(config: ModelConfig) -> int:
    """The LLM's `pipeline_parallel_size` parameter; 1 when absent or not a whole number (as above)."""
    return _whole_parameter(config, "pipeline_parallel_size")


def _whole_parameter(config: ModelConfig, name: str) -> int:
    parameter = config.parameters.get(name)
    try:
        return max(int(parameter.string_value), 1) if parameter is not None else 1
    except ValueError:
        return 1


def _place_ranks(
    ledger: MemoryLedger,
    config: ModelConfig,
    spec: InstanceSpec,
    declared: int | None,
    load: int,
    plan: MemoryPlan,
    ranks: int,
) -> InstanceSpec:
    """An LLM instance of `ranks` processes (tensor × pipeline parallel) on `ranks` consecutive GPUs, the same
    bytes held on each."""
    gpus = {gpu.id: gpu for gpu in ledger.gpus()}
    if spec.device_id == ANY_GPU:
        runs = [[gpus.get(first + r) for r in range(ranks)] for first in sorted(gpus)]
        runs = [run for run in runs if all(run)]
        if not runs:
            return replace(spec, device_id=0)  # fewer GPUs than ranks: the engine's start says so, naming both
        devices = max(runs, key=lambda run: (min(ledger.free(d) for d in run), -run[0].id))
        spec = replace(spec, device_id=devices[0].id)
    else:
        devices = [gpus.get(spec.device_id + r) for r in range(ranks)]
        if not all(devices):
            return spec  # a GPU this machine lacks: the engine's start says which
    if declared is not None:
        count, source = declared, declared_source(spec.kind)
    else:
        utilization = llm_utilization(config)
        count = min(llm_share_bytes(ledger.free(d), ledger.limit(d), utilization) for d in devices)
        source = LLM_SHARE
    for rank, device in enumerate(devices):
        holder = Holder(spec.model_name, spec.model_version, f"{spec.instance_name} rank {rank}", load)
        ledger.reserve(holder, device, count, source, count)
        plan.holders.setdefault(device, []).append(holder)
    return replace(spec, memory_budget_bytes=count)


def sized_last(layout: RepositoryLayout, name: str) -> bool:
    """Whether `name` takes what memory the others leave (an LLM without a declared size): load it after them.
    A config that cannot be read says no (its load reports why)."""
    try:
        config, _ = read_model_config(layout.locate(name).path, name, None)
    except ModelgateError:
        return False
    return config.backend == "llm" and MEMORY_PARAMETERS["GPU"] not in config.parameters
