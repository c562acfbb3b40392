"""Which models a frontend worker serves itself: the server's LLM versions, with where their engines listen.

The server sends the whole table whenever it changes (a load, an unload, an engine back after a restart);
a worker attaches to what is new and lets go of what is gone. Everything else a worker forwards to the server.
"""

from __future__ import annotations

import msgspec

from modelgate.server.loaded_model import LoadedVersion


class EngineEntry(msgspec.Struct, array_like=True):
    instance_name: str  # as the config names instances: a worker's instances of the model get the same names
    path: str  # the engine's Unix socket


class AttachedModel(msgspec.Struct, array_like=True):
    name: str
    version: int
    config: bytes  # the ModelConfig message as the server completed it
    model_dir: str
    version_dir: str
    engines: list[EngineEntry]


class ModelTable(msgspec.Struct, array_like=True):
    models: list[AttachedModel]


def attachable_models(serving: list[LoadedVersion]) -> ModelTable:
    """The versions among `serving` whose every instance publishes an engine address, and whose engines run."""
    models = []
    for loaded in serving:
        pool = getattr(loaded.scheduler, "pool", None)
        if pool is None or not pool.instances:
            continue
        addresses = [getattr(instance, "engine_address", None) for instance in pool.instances]
        if any(address is None for address in addresses) or not all(_engine_runs(i) for i in pool.instances):
            continue
        spec = pool.specs[0]
        engines = [EngineEntry(s.instance_name, a.path) for s, a in zip(pool.specs, addresses)]
        config = loaded.config.SerializeToString()
        models.append(
            AttachedModel(loaded.name, loaded.version, config, str(spec.model_dir), str(spec.version_dir), engines)
        )
    return ModelTable(models)


def _engine_runs(instance) -> bool:
    engines = getattr(instance, "engines", None)
    return engines is not None and engines.client is not None
