"""An ensemble's composing models, made to serve before the ensemble loads, and checked against it.

Done in every control mode: in none and poll mode the composing models load anyway, and a model loaded here
is not loaded twice (the startup loads wait on its lock, the poller sees its fingerprint). Each composing
model that is loading is waited for, each one that serves no version is loaded first (as Triton does), then
the ensemble is checked against their configs (`composing_checks`). Ensembles that contain each other fail
to load instead of waiting on each other forever: the waits of the ensembles being loaded are recorded, and
a wait that would close a circle is refused.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from tritonclient.grpc.model_config_pb2 import ModelConfig

from modelgate.core.errors import ConfigError, InvalidArgumentError, ModelgateError
from modelgate.server.scheduling.ensemble.composing_checks import check_composing_models
from modelgate.server.scheduling.ensemble.graph import EnsembleStep, build_ensemble_graph, composing_model_names


class _Serving(Protocol):
    config: ModelConfig


class ModelLoads(Protocol):
    """What preparing an ensemble needs of the model manager."""

    async def wait_for_load(self, name: str) -> None:
        """Return once the load or unload of `name` in progress (if any) is over."""
        ...

    def ready_versions(self, name: str) -> list[int]: ...

    async def load(self, name: str) -> None: ...

    def resolve(self, name: str, version: str = "") -> _Serving:
        """The serving version ("" for the latest); ModelgateError when none serves."""
        ...


class ComposingModels:
    """Prepares each ensemble that the manager loads; owns what each ensemble being loaded waits on."""

    def __init__(self, models: ModelLoads):
        self._models = models
        self._waits: dict[str, set[str]] = {}  # ensemble being loaded -> composing models awaited

    async def prepare(self, config: ModelConfig, source: str) -> None:
        """Make every composing model of the ensemble `config` serve, then check the ensemble against their
        configs; ConfigError naming the step's field otherwise."""
        graph = build_ensemble_graph(config, source)
        names = composing_model_names(config)
        outcomes = await asyncio.gather(*(self._ensure_serving(config.name, n) for n in names), return_exceptions=True)
        failures = {name: outcome for name, outcome in zip(names, outcomes) if outcome is not None}
        composing = {}
        for step in graph.steps:
            failure = failures.get(step.model_name)
            if isinstance(failure, ModelgateError):
                reason = f"model '{step.model_name}' is not available: {failure.message}"
                raise ConfigError(source, f"{step.field}.model_name", reason)
            if failure is not None:
                raise failure
            composing[step.index] = self._composing_config(step, source)
        check_composing_models(config, graph, source, composing)

    async def _ensure_serving(self, ensemble: str, name: str) -> None:
        """Wait for a load of `name` in progress; load `name` if no version of it serves."""
        if self._waits_on(name, ensemble):
            raise InvalidArgumentError(
                f"it contains ensemble '{ensemble}' (directly or not): the ensembles form a cycle"
            )
        waits = self._waits.setdefault(ensemble, set())
        waits.add(name)
        try:
            await self._models.wait_for_load(name)
            if not self._models.ready_versions(name):
                await self._models.load(name)
        finally:
            waits.discard(name)
            if not waits:
                self._waits.pop(ensemble, None)

    def _waits_on(self, start: str, target: str) -> bool:
        """Whether `start` is `target` or an ensemble being loaded that waits, transitively, on it."""
        seen: set[str] = set()
        pending = [start]
        while pending:
            name = pending.pop()
            if name == target:
                return True
            if name not in seen:
                seen.add(name)
                pending.extend(self._waits.get(name, ()))
        return False

    def _composing_config(self, step: EnsembleStep, source: str) -> ModelConfig:
        try:
            return self._models.resolve(step.model_name, step.model_version).config
        except ModelgateError as exc:
            field = f"{step.field}.model_version" if step.model_version else f"{step.field}.model_name"
            raise ConfigError(source, field, exc.message) from None
