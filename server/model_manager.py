"""Model lifecycle: load, reload, unload, version states, and finding the serving version.

All methods run on the event loop; model code runs on instance threads. A load of one
model is serialized with other loads/unloads of the same model by a per-model lock.
A reload builds the new versions while the old ones keep serving and swaps them in only
if every new version loaded; otherwise the old versions keep serving and the load fails.
An ensemble loads after its composing models (see `scheduling.ensemble.composing_models`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.backends.base import load_failure_reason
from modelgate.core.errors import (
    ConfigError,
    InvalidArgumentError,
    ModelgateError,
    ModelNotReadyError,
    UnknownModelError,
)
from modelgate.server.load_failures import load_error, parse_version, polling
from modelgate.server.load_services import LoadServices
from modelgate.server.loaded_model import LoadedVersion, load_version
from modelgate.server.memory.ledger import InsufficientMemoryError, MemoryLedger
from modelgate.server.model_entry import ModelEntry, ModelState, VersionStatus
from modelgate.server.repository.config_completion import complete_model_config, read_model_config
from modelgate.server.repository.layout import RepositoryLayout, check_model_name, fingerprint
from modelgate.server.repository.override_files import remove_override_model_dir, write_override_model_dir
from modelgate.server.scheduling.ensemble.composing_models import ComposingModels
from modelgate.server.scheduling.ensemble.graph import composing_model_names, is_ensemble
from modelgate.server.scheduling.ensemble.scheduler import StepInfer
from modelgate.server.statistics import StatisticsRegistry, VersionStatistics

logger = logging.getLogger(__name__)

# A load request's `config` parameter: JSON text or its mapping as sent, or a ModelConfig parsed already.
ConfigOverride = ModelConfig | str | dict | None

EVICTED = "evicted to make room for another model"
# Keys of index rows beyond Triton's ModelIndex message (the gRPC frontend leaves them out).
INDEX_EXTENSION_FIELDS = ("memory_usage",)


class ModelManager:
    def __init__(self, layout: RepositoryLayout, stats: StatisticsRegistry, ledger: MemoryLedger | None = None):
        """`ledger`: where instances are placed and their memory accounted; None: nothing is (unit tests)."""
        self.layout = layout
        self.stats = stats
        self.ledger = ledger
        self._entries: dict[str, ModelEntry] = {}
        # Runs ensemble steps: the dataplane's `infer`, set by whoever builds the dataplane
        # (ModelgateServer); while it is None, ensembles fail to load.
        self.infer_step: StepInfer | None = None
        self._ensembles = ComposingModels(self)
        # The server's response cache (--cache-config) and rate limiter (--rate-limit), for every load.
        self.services = LoadServices()

    # -- lifecycle -------------------------------------------------------------------------

    async def load(
        self, name: str, config_override: ConfigOverride = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Load or reload `name`; raises the first failure (the old versions keep serving).

        `config_override`: a load request's `config` parameter as sent (JSON text, or its mapping), or a parsed
        ModelConfig. Failures before any version loads (no such model in the repositories, an invalid config or
        override, files that cannot be written) are RepositoryPollError, a version that fails ModelLoadError, as
        Triton words and codes them. A model that no repository has (and no `files` provide) is refused before
        any state is kept for it, so a mistyped name never shows up in the repository index.
        """
        check_model_name(name)
        if files and config_override is None:
            raise InvalidArgumentError("load parameters 'file:*' need the 'config' parameter too")
        if not files and name not in self._entries:
            with polling(name):
                self.layout.locate(name)  # not found / duplicated: refused, recording nothing
        entry = self._entries.setdefault(name, ModelEntry(name))
        entry.wanted = True
        async with entry.lock:
            await self._load_locked(entry, config_override, files or {})

    async def unload(self, name: str, unload_dependents: bool = False) -> None:
        """Unload `name`; with `unload_dependents` (Triton's parameter), an ensemble's composing
        models too, except those that another serving ensemble still uses."""
        check_model_name(name)
        entry = self._entries.get(name)
        if entry is None:
            self.layout.locate(name)  # UnknownModelError for a model the repository does not have
            return
        composing = sorted(_composing_names(entry)) if unload_dependents else []
        entry.wanted = False
        async with entry.lock:
            await self._unload_locked(entry, "unloaded")
        still_used = {n for other in self._entries.values() for n in _composing_names(other)}
        for model in composing:
            if model not in still_used and model in self._entries:
                await self.unload(model, unload_dependents=True)

    async def evict(self, name: str) -> None:
        """Unload `name` to make room (load on demand brings it back); it no longer counts for readiness."""
        entry = self._entries.get(name)
        if entry is None:
            return
        entry.wanted = False
        async with entry.lock:
            await self._unload_locked(entry, EVICTED)

    def load_failed(self, name: str) -> bool:
        """Whether the last load of `name` failed (rather than never happening, or an unload or eviction)."""
        entry = self._entries.get(name)
        if entry is None or entry.serving:
            return False
        if entry.model_reason:
            return True
        return any(s.reason not in (EVICTED, "unloaded", "") for s in entry.statuses.values())

    async def forget(self, name: str) -> None:
        """Unload a model removed from the repository and drop it from the index."""
        entry = self._entries.get(name)
        if entry is None:
            return
        async with entry.lock:
            await self._unload_locked(entry, "removed from the repository")
        self._entries.pop(name, None)

    async def shutdown(self) -> None:
        for name in list(self._entries):
            entry = self._entries[name]
            async with entry.lock:
                await self._unload_locked(entry, "server shutting down")

    # -- queries ---------------------------------------------------------------------------

    def resolve(self, name: str, version: str = "") -> LoadedVersion:
        """The serving version for a request; NotFound / Unavailable with the reason otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownModelError(name)
        if version == "":
            if not entry.serving:
                raise ModelNotReadyError(name, None, self._reason(entry))
            return self._serving(entry, max(entry.serving))
        number = parse_version(version)
        if number in entry.serving:
            return self._serving(entry, number)
        status = entry.statuses.get(number)
        if status is not None:
            raise ModelNotReadyError(
                name, number, f"{status.state.value}" + (f", {status.reason}" if status.reason else "")
            )
        raise UnknownModelError(name, number, f"ready versions: {sorted(entry.serving) or 'none'}")

    def _serving(self, entry: ModelEntry, number: int) -> LoadedVersion:
        stopped = entry.stopped_instances.get(number)
        if stopped:
            reason = next(iter(stopped.values()))
            raise ModelNotReadyError(entry.name, number, f"UNAVAILABLE, {reason}")
        return entry.serving[number]

    def _health_listener(self, entry: ModelEntry, version: int):
        """For the instances of `version`: their reports reach the loop, which marks the version's state."""
        loop = asyncio.get_running_loop()

        def on_health(instance: str, reason: str | None) -> None:
            loop.call_soon_threadsafe(self._set_instance_health, entry, version, instance, reason)

        return on_health

    def _set_instance_health(self, entry: ModelEntry, version: int, instance: str, reason: str | None) -> None:
        if version not in entry.serving:
            return  # a late report from a version that is gone
        stopped = entry.stopped_instances.setdefault(version, {})
        if reason is None:
            if stopped.pop(instance, None) is not None:  # it stopped and came back
                entry.serving[version].stats.instance_restarts += 1
        else:
            stopped[instance] = reason
        if stopped:
            entry.statuses[version] = VersionStatus(ModelState.UNAVAILABLE, next(iter(stopped.values())))
        else:
            entry.statuses[version] = VersionStatus(ModelState.READY)

    def known_model(self, name: str) -> bool:
        return name in self._entries

    def every_model_serves(self) -> bool:
        """Whether every model asked to serve (loaded and not unloaded since) has a version serving with all its
        instances up: Triton's strict readiness."""
        return all(
            entry.serving and not any(entry.stopped_instances.values())
            for entry in self._entries.values()
            if entry.wanted
        )

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.resolve(name, version)
            return True
        except ModelgateError:
            return False

    async def wait_for_load(self, name: str) -> None:
        """Return once the load or unload of `name` in progress (if any) is over."""
        entry = self._entries.get(name)
        if entry is not None and entry.lock.locked():
            async with entry.lock:
                pass  # only the outcome of the load or unload in progress matters

    def ready_versions(self, name: str) -> list[int]:
        entry = self._entries.get(name)
        return sorted(entry.serving) if entry else []

    def all_serving(self) -> list[LoadedVersion]:
        return [v for e in self._entries.values() for _, v in sorted(e.serving.items())]

    def fingerprint_of(self, name: str) -> str:
        entry = self._entries.get(name)
        return entry.fingerprint if entry else ""

    def loaded_names(self) -> list[str]:
        return sorted(self._entries)

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every model in the repositories, with version states."""
        rows = []
        models, duplicated = self.layout.scan()
        names = sorted(set(models) | set(duplicated) | set(self._entries))
        for name in names:
            rows.extend(self._index_rows(name, duplicated.get(name, "")))
        if ready_only:
            rows = [r for r in rows if r.get("state") == ModelState.READY.value]
        return rows

    # -- internals -------------------------------------------------------------------------

    async def _load_locked(self, entry: ModelEntry, override: ModelConfig | None, files: dict[str, bytes]) -> None:
        override_dir = None
        try:
            with polling(entry.name):
                override_dir = write_override_model_dir(entry.name, files) if files else None
                model_dir = override_dir or self.layout.locate(entry.name).path
                stamp = fingerprint(model_dir)
                config, source = read_model_config(model_dir, entry.name, override)
                config, backend, versions = await asyncio.to_thread(
                    complete_model_config, config, source, model_dir, entry.name
                )
            if config.response_cache.enable and self.services.response_cache is None:
                raise ConfigError(
                    source,
                    "response_cache.enable",
                    "is true but the server has no response cache: start it with --cache-config local,size=<bytes>",
                )
            if is_ensemble(config):
                await self._ensembles.prepare(config, source)
        except ModelgateError as exc:
            self._record_model_failure(entry, getattr(exc, "detail", exc.message), override_dir)
            raise
        loaded, failures, refusal = await self._load_versions(entry, config, backend, model_dir, versions)
        if failures and entry.serving:
            await self._discard(loaded)
            self._restore_statuses(entry, failures)
            remove_override_model_dir(override_dir)
            raise load_error(entry.name, failures[0], refusal, "previous versions keep serving")
        await self._swap_in(entry, loaded, override_dir, stamp)
        for version, reason in failures:
            entry.statuses[version] = VersionStatus(ModelState.UNAVAILABLE, reason)
        if failures:
            raise load_error(entry.name, failures[0], refusal)

    async def _load_versions(self, entry, config, backend, model_dir, versions):
        """(loaded versions, (version, reason) of each failure, the memory refusal among them if any)."""
        loaded: dict[int, LoadedVersion] = {}
        failures: list[tuple[int, str]] = []
        refusal: InsufficientMemoryError | None = None
        for version in versions:
            if version not in entry.serving:
                entry.statuses[version] = VersionStatus(ModelState.LOADING)
            try:
                stats = VersionStatistics(entry.name, str(version))  # a (re)load starts afresh, as in Triton
                on_health = self._health_listener(entry, version)
                loaded[version] = await load_version(
                    config,
                    backend,
                    model_dir,
                    version,
                    stats,
                    self.infer_step,
                    on_health,
                    self.ledger,
                    self.services,
                )
            except InsufficientMemoryError as exc:  # refused before it started: nothing to trace back
                failures.append((version, exc.message))
                refusal = exc
            except Exception as exc:  # the model's initialize failed: report it, keep the server up
                logger.exception("loading model '%s' version %d failed", entry.name, version)
                failures.append((version, load_failure_reason(exc)))
        return loaded, failures, refusal

    async def _swap_in(self, entry: ModelEntry, loaded: dict[int, LoadedVersion], override_dir, stamp: str) -> None:
        old = entry.serving
        entry.serving = loaded
        entry.model_reason = ""
        entry.fingerprint = stamp
        previous_dir, entry.override_dir = entry.override_dir, override_dir
        for version, new_version in loaded.items():
            entry.statuses[version] = VersionStatus(ModelState.READY)
            entry.stopped_instances.pop(version, None)  # the new instances report afresh
            self.stats.register(new_version.stats)
        for version in old:
            if version not in loaded:
                entry.statuses[version] = VersionStatus(ModelState.UNLOADING)
        await self._discard(old)
        for version in old:
            if version not in loaded:
                entry.statuses[version] = VersionStatus(ModelState.UNAVAILABLE, "unloaded")
                self.stats.remove(entry.name, str(version))
        if previous_dir is not None and previous_dir != override_dir:
            remove_override_model_dir(previous_dir)

    async def _unload_locked(self, entry: ModelEntry, reason: str) -> None:
        serving, entry.serving = entry.serving, {}
        for version in serving:
            entry.statuses[version] = VersionStatus(ModelState.UNLOADING)
        await self._discard(serving)
        for version in serving:
            entry.statuses[version] = VersionStatus(ModelState.UNAVAILABLE, reason)
            self.stats.remove(entry.name, str(version))
        for status in entry.statuses.values():
            if status.state != ModelState.UNAVAILABLE:
                status.state, status.reason = ModelState.UNAVAILABLE, reason
        entry.fingerprint = ""
        remove_override_model_dir(entry.override_dir)
        entry.override_dir = None

    async def _discard(self, versions: dict[int, LoadedVersion]) -> None:
        for loaded in versions.values():
            await loaded.scheduler.close()
            if self.ledger is not None:
                self.ledger.release(loaded.holders)

    def _record_model_failure(self, entry: ModelEntry, reason: str, override_dir: Path | None) -> None:
        remove_override_model_dir(override_dir)
        if entry.serving:
            return  # a failed reload keeps the serving versions and their states
        entry.model_reason = reason
        entry.statuses = {v: VersionStatus(ModelState.UNAVAILABLE, reason) for v in entry.statuses}

    def _restore_statuses(self, entry: ModelEntry, failures: list[tuple[int, str]]) -> None:
        for version in list(entry.statuses):
            if version in entry.serving:
                entry.statuses[version] = VersionStatus(ModelState.READY)
            elif entry.statuses[version].state == ModelState.LOADING:
                del entry.statuses[version]

    def _reason(self, entry: ModelEntry) -> str:
        """Why no version serves: the model's failure, else each version's state and reason."""
        if entry.model_reason:
            return entry.model_reason
        described = [
            f"version {v} is {s.state.value}" + (f": {s.reason}" if s.reason else "")
            for v, s in sorted(entry.statuses.items())
        ]
        if not described:
            return ModelState.LOADING.value if entry.lock.locked() else "not loaded"
        return "; ".join(described)

    def _index_rows(self, name: str, duplicate_reason: str) -> list[dict]:
        entry = self._entries.get(name)
        if duplicate_reason:
            return [{"name": name, "state": ModelState.UNAVAILABLE.value, "reason": duplicate_reason}]
        if entry is None:
            return [{"name": name}]
        if not entry.statuses:
            state = ModelState.LOADING if entry.lock.locked() else ModelState.UNAVAILABLE
            return [{"name": name, "state": state.value, "reason": entry.model_reason}]
        rows = []
        for v, s in sorted(entry.statuses.items()):
            row = {"name": name, "version": str(v), "state": s.state.value, "reason": s.reason}
            if v in entry.serving and entry.serving[v].stats.memory_usage:
                row[INDEX_EXTENSION_FIELDS[0]] = entry.serving[v].stats.memory_usage
            rows.append(row)
        return rows


def _composing_names(entry: ModelEntry) -> set[str]:
    """The models that the serving versions of `entry` use as ensemble steps (none unless an ensemble)."""
    return {n for v in entry.serving.values() if is_ensemble(v.config) for n in composing_model_names(v.config)}
