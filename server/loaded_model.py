"""A loaded, serving model version: its config, instances, scheduler and statistics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from modelgate.backends.base import Backend, HealthReport, InstanceSpec, ModelCaller
from modelgate.core.config_json import config_to_dict
from modelgate.core.errors import UnavailableError
from modelgate.core.tensors import datatypes
from modelgate.core.tensors.device_tensors import takes_device_inputs
from modelgate.server.load_services import LoadServices
from modelgate.server.memory.ledger import Holder, MemoryLedger
from modelgate.server.memory.memory_probe import probe_instances
from modelgate.server.memory.placement import ANY_GPU, plan_memory
from modelgate.server.request_validation import RequestSchema
from modelgate.server.response_cache.caching_scheduler import CachingScheduler
from modelgate.server.scheduling.direct_scheduler import DirectScheduler
from modelgate.server.scheduling.dynamic_batcher import DynamicBatcher
from modelgate.server.scheduling.ensemble.graph import build_ensemble_graph, is_ensemble
from modelgate.server.scheduling.ensemble.scheduler import EnsembleScheduler, StepInfer
from modelgate.server.scheduling.instance_pool import InstancePool
from modelgate.server.scheduling.sequence.config_fields import is_sequence_model
from modelgate.server.scheduling.sequence.scheduler import SequenceBatcher
from modelgate.server.scheduling.sequence.sequence_config import SequenceConfig, read_sequence_config
from modelgate.server.statistics import VersionStatistics
from modelgate.server.warmup.runner import warm_up
from modelgate.server.warmup.samples import WarmupSample, build_samples


@dataclass
class LoadedVersion:
    name: str
    version: int
    config: ModelConfig
    config_dict: dict  # Triton's JSON form of `config`
    scheduler: DirectScheduler | DynamicBatcher | EnsembleScheduler | SequenceBatcher | CachingScheduler
    stats: VersionStatistics
    # Read from `config` once: every request consults them.
    holders: list[Holder] = field(default_factory=list)  # what the memory ledger holds for its instances
    schema: RequestSchema = field(init=False)
    is_decoupled: bool = field(init=False)
    takes_device_inputs: bool = field(init=False)
    # The metadata extension's {name, datatype, shape} of each input and output: a generate request reads them.
    inputs_metadata: list[dict] = field(init=False)
    outputs_metadata: list[dict] = field(init=False)

    def __post_init__(self) -> None:
        self.schema = RequestSchema(self.config)
        self.is_decoupled = self.config.model_transaction_policy.decoupled
        self.takes_device_inputs = takes_device_inputs(self.config)
        self.inputs_metadata = [tensor_metadata(t, self.config) for t in self.config.input]
        self.outputs_metadata = [tensor_metadata(t, self.config) for t in self.config.output]


def tensor_metadata(tensor, config: ModelConfig) -> dict:
    """A config input or output as the metadata extension shows it (a batching model's shape starts with -1)."""
    shape = ([-1] if config.max_batch_size > 0 else []) + [int(d) for d in tensor.dims]
    datatype = datatypes.from_config_name(DataType.Name(tensor.data_type)).wire_name
    return {"name": tensor.name, "datatype": datatype, "shape": shape}


# (instance name, reason or None): an instance of the version being loaded stopped, or serves again.
InstanceHealth = Callable[[str, str | None], None]


def instance_specs(
    config: ModelConfig,
    model_dir: Path,
    version: int,
    call_model: ModelCaller | None = None,
    on_health: InstanceHealth | None = None,
    event_loop: asyncio.AbstractEventLoop | None = None,
) -> list[InstanceSpec]:
    """One spec per instance, as Triton places them.

    A CPU group makes `count` instances; a GPU group makes `count` instances on each of its
    `gpus` (every visible GPU when none are listed). Names are `<group>_<k>`, k counting
    across the group.
    """
    specs = []
    for group in config.instance_group:
        is_gpu = group.kind == ModelInstanceGroup.KIND_GPU
        # Without `gpus`, `count` instances that the memory ledger places (placement.py), not Triton's count
        # per visible GPU: where memory is accounted, each goes where there is most room.
        devices = (list(group.gpus) or [ANY_GPU]) if is_gpu else [0]
        placements = [device for device in devices for _ in range(group.count)]
        for k, device in enumerate(placements):
            specs.append(
                InstanceSpec(
                    model_name=config.name,
                    model_version=version,
                    instance_name=f"{group.name}_{k}",
                    kind="GPU" if is_gpu else "CPU",
                    device_id=device,
                    model_dir=model_dir,
                    version_dir=model_dir / str(version),
                    config=config,
                    call_model=call_model,
                    report_health=_reporter(on_health, f"{group.name}_{k}"),
                    event_loop=event_loop,
                )
            )
    return specs


def batches_dynamically(config: ModelConfig) -> bool:
    """The dynamic batcher schedules this model (else the direct scheduler, or the ensemble's)."""
    return config.HasField("dynamic_batching") and config.max_batch_size > 0


def is_pipelined(config: ModelConfig) -> bool:
    """Whether the instance pool may hand an instance several batches at once: only for the direct scheduler
    (the batchers form their batches while the instances are busy)."""
    return not batches_dynamically(config) and not is_sequence_model(config)


def make_scheduler(
    pool: InstancePool | None,
    stats: VersionStatistics,
    config: ModelConfig,
    infer_step: StepInfer | None = None,
    sequence_config: SequenceConfig | None = None,
):
    """The ensemble scheduler for an ensemble (no pool: its steps run on the composing models), the sequence
    batcher for `sequence_batching` (`sequence_config` read beforehand, else here without a model folder), the
    dynamic batcher when the config asks for it (and the model batches), else direct."""
    if is_ensemble(config):
        if infer_step is None:
            raise UnavailableError(f"ensemble '{config.name}' cannot run: this server has no dataplane for its steps")
        return EnsembleScheduler(build_ensemble_graph(config, config.name), stats, infer_step)
    if is_sequence_model(config):
        return SequenceBatcher(pool, stats, sequence_config or read_sequence_config(config, None), config)
    if batches_dynamically(config):
        return DynamicBatcher(pool, stats, config)
    return DirectScheduler(pool, stats, is_decoupled=config.model_transaction_policy.decoupled)


async def load_version(
    config: ModelConfig,
    backend: Backend | None,
    model_dir: Path,
    version: int,
    stats: VersionStatistics,
    infer_step: StepInfer | None = None,
    on_health: InstanceHealth | None = None,
    ledger: MemoryLedger | None = None,
    services: LoadServices | None = None,
) -> LoadedVersion:
    """Create every instance of `version` (none for an ensemble: `backend` is None); raises what
    the backend raised. `infer_step` (the dataplane's `infer`) runs an ensemble's steps, and the requests
    that the instances send to other models (BLS). `on_health` hears of instances that stop and come back.
    With a `ledger`, the instances are placed and their memory reserved first (InsufficientMemoryError before
    anything loads), and what the load cost is measured and kept there (the version's `holders`). A config that
    enables the response cache gets its scheduler behind `services.response_cache` (the model manager refuses
    such a config when the server has none); with `services.rate_limiter`, executions wait for its resources."""
    services = services or LoadServices()
    pool, holders = None, []
    # Read (initial state files included) before any instance loads: a bad file fails the load at once.
    sequence_config = None
    if is_sequence_model(config):
        sequence_config = await asyncio.to_thread(read_sequence_config, config, model_dir)
    if backend is not None:
        samples = build_samples(config, model_dir, version, f"model '{config.name}' version {version}")
        loop = asyncio.get_running_loop()
        call_model = None if infer_step is None else blocking_caller(infer_step, loop)
        specs = instance_specs(config, model_dir, version, call_model, on_health, loop)
        if ledger is None:
            specs = [replace(s, device_id=0) if s.device_id == ANY_GPU else s for s in specs]
            pool = InstancePool(specs, is_pipelined(config), services.rate_limiter)
            await pool.load(backend)
            await _warm_up_or_close(pool, samples, config, stats)
        else:
            plan = plan_memory(ledger, config, specs)
            holders = plan.all_holders
            pool = InstancePool(plan.specs, is_pipelined(config), services.rate_limiter)
            try:
                async with ledger.measuring(plan.holders) as changes:
                    await pool.load(backend)
                    if plan.holders:
                        await probe_instances(pool, config, len(plan.specs))
                    await _warm_up_or_close(pool, samples, config, stats)  # what warming up costs counts too
            except BaseException:
                ledger.release(holders)
                raise
            for device, device_holders in plan.holders.items():
                ledger.settle(device_holders, device, changes[device])
            stats.memory_usage = ledger.usage(holders)
    scheduler = make_scheduler(pool, stats, config, infer_step, sequence_config)
    if config.response_cache.enable and services.response_cache is not None:
        scheduler = CachingScheduler(scheduler, services.response_cache, stats, version)
    return LoadedVersion(config.name, version, config, config_to_dict(config), scheduler, stats, holders)


async def _warm_up_or_close(
    pool: InstancePool, samples: list[WarmupSample], config: ModelConfig, stats: VersionStatistics
) -> None:
    """Warm every instance up (model_warmup) before the version serves; a failure unloads them and raises."""
    if not samples:
        return
    try:
        await warm_up(pool, samples, RequestSchema(config), stats, config.model_transaction_policy.decoupled)
    except BaseException:
        await pool.close()
        raise


def blocking_caller(infer: StepInfer, loop: asyncio.AbstractEventLoop) -> ModelCaller:
    """`infer` on the server's loop, for an instance thread that waits for the answer."""

    def call(request):
        return asyncio.run_coroutine_threadsafe(infer(request), loop).result()

    return call


def _reporter(on_health: InstanceHealth | None, instance_name: str) -> HealthReport | None:
    if on_health is None:
        return None
    return lambda reason: on_health(instance_name, reason)
