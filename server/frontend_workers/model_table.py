"""Which models a frontend worker serves itself: the server's versions whose instances publish where their
processes take workers (LLM engines), with those addresses.

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
    """The versions among `serving` whose every instance publishes where workers attach (its process runs)."""
    models = []
    for loaded in serving:
        pool = getattr(loaded.scheduler, "pool", None)  # an ensemble has none
        if pool is None or not pool.instances:
            continue
        addresses = [instance.shared_address for instance in pool.instances]
        if None in addresses:
            continue
        spec = pool.specs[0]
        engines = [EngineEntry(s.instance_name, address) for s, address in zip(pool.specs, addresses)]
        config = loaded.config.SerializeToString()
        models.append(
            AttachedModel(loaded.name, loaded.version, config, str(spec.model_dir), str(spec.version_dir), engines)
        )
    return ModelTable(models)
