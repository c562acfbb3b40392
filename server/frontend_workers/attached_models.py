"""A frontend worker's models: the server's LLM versions, each instance attached to the engine the server owns.

It answers the part of the model manager that the dataplane and the LLM routes use (resolve, is_ready,
ready_versions, all_serving), so that the worker runs the server's own handlers unchanged. It is never the
authority on a model: requests for anything it does not serve right now go to the server (worker_app.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import Backend, InstanceSpec, ModelInstance, backend_for_config
from modelgate.core.errors import InvalidVersionError, ModelgateError, UnavailableError, UnknownModelError
from modelgate.server.frontend_workers.model_table import AttachedModel, ModelTable
from modelgate.server.loaded_model import LoadedVersion, load_version
from modelgate.server.statistics import StatisticsRegistry, VersionStatistics

logger = logging.getLogger(__name__)


class _Attaching(Backend):
    """A model's own backend, making instances that attach to the server's processes (Backend.attach_instance)."""

    def __init__(self, backend: Backend, model: AttachedModel):
        self.name = backend.name
        self._backend = backend
        self._addresses = {entry.instance_name: entry.path for entry in model.engines}

    def load_instance(self, spec: InstanceSpec) -> ModelInstance:
        address = self._addresses.get(spec.instance_name)
        if address is None:
            raise UnavailableError(f"the server published no address for instance '{spec.instance_name}'")
        return self._backend.attach_instance(spec, address)


class AttachedModels:
    def __init__(self, stats: StatisticsRegistry):
        self.stats = stats
        self._serving: dict[str, dict[int, LoadedVersion]] = {}
        self._sources: dict[tuple[str, int], AttachedModel] = {}

    async def reconcile(self, table: ModelTable) -> None:
        """Attach to what the table adds or changes, let go of what it drops."""
        wanted = {(model.name, model.version): model for model in table.models}
        for key in [key for key, source in self._sources.items() if wanted.get(key) != source]:
            await self._drop(*key)
        for key, model in wanted.items():
            if key not in self._sources:
                await self._attach(model)

    async def close(self) -> None:
        for name, version in list(self._sources):
            await self._drop(name, version)

    def serves(self, name: str, version: str = "") -> bool:
        """Whether this worker answers requests for the model itself: attached, and its engines reachable."""
        try:
            loaded = self.resolve(name, version)
        except ModelgateError:
            return False
        return all(instance.is_serving for instance in loaded.scheduler.pool.instances)

    # -- the model manager's surface, as the dataplane and the LLM routes read it ---------------------------

    def resolve(self, name: str, version: str = "") -> LoadedVersion:
        versions = self._serving.get(name)
        if not versions:
            raise UnknownModelError(name)
        if version == "":
            return versions[max(versions)]
        if not version.isdigit():
            raise InvalidVersionError(version)
        loaded = versions.get(int(version))
        if loaded is None:
            raise UnknownModelError(name, int(version), "not served by this worker")
        return loaded

    def is_ready(self, name: str, version: str = "") -> bool:
        return self.serves(name, version)

    def ready_versions(self, name: str) -> list[int]:
        return sorted(self._serving.get(name, {}))

    def all_serving(self) -> list[LoadedVersion]:
        return [loaded for versions in self._serving.values() for loaded in versions.values()]

    def every_model_serves(self) -> bool:
        return True  # the server's readiness is the server's to tell: workers forward it

    async def _attach(self, model: AttachedModel) -> None:
        config = ModelConfig.FromString(model.config)
        stats = VersionStatistics(model.name, str(model.version))
        try:
            backend = _Attaching(backend_for_config(config, f"model '{model.name}'"), model)
            loaded = await load_version(config, backend, Path(model.model_dir), model.version, stats)
        except Exception as exc:  # the server keeps serving it; a later table tries again
            logger.warning(
                "frontend worker: cannot attach to model '%s' version %d: %s", model.name, model.version, exc
            )
            return
        self.stats.register(stats)
        self._serving.setdefault(model.name, {})[model.version] = loaded
        self._sources[(model.name, model.version)] = model

    async def _drop(self, name: str, version: int) -> None:
        self._sources.pop((name, version), None)
        versions = self._serving.get(name, {})
        loaded = versions.pop(version, None)
        if not versions:
            self._serving.pop(name, None)
        self.stats.remove(name, str(version))
        if loaded is not None:
            await loaded.scheduler.close()
