"""Poll mode: picks up new, changed and removed models by re-scanning the repositories.

It drives the model manager (loads, unloads), so it sits beside it: `repository/` only reads the repository.
"""

from __future__ import annotations

import asyncio
import logging

from modelgate.core.errors import ModelgateError
from modelgate.server.memory.placement import sized_last
from modelgate.server.model_manager import ModelManager
from modelgate.server.repository.layout import RepositoryLayout, fingerprint

logger = logging.getLogger(__name__)


class RepositoryPoller:
    """Each poll: (re)load models whose files changed, unload models no longer present.

    A model whose load failed is retried only when its files change again; a failed reload
    leaves the serving versions in place (the manager guarantees that).
    """

    def __init__(self, manager: ModelManager, layout: RepositoryLayout, interval_secs: float):
        self.manager = manager
        self.layout = layout
        self.interval_secs = interval_secs
        self._attempted: dict[str, str] = {}

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_secs)
            try:
                await self.poll_once()
            except Exception:  # a poll must never stop polling
                logger.exception("repository poll failed")

    async def poll_once(self) -> None:
        models, _ = self.layout.scan()
        # Models that take what the others leave (an LLM's KV cache) load after them.
        for name, location in sorted(models.items(), key=lambda item: sized_last(self.layout, item[0])):
            stamp = fingerprint(location.path)
            if stamp in (self.manager.fingerprint_of(name), self._attempted.get(name)):
                continue
            self._attempted[name] = stamp
            await self._load(name)
        for name in self.manager.loaded_names():
            if name not in models:
                logger.info("model '%s' was removed from the repository; unloading", name)
                self._attempted.pop(name, None)
                await self.manager.forget(name)

    async def _load(self, name: str) -> None:
        try:
            await self.manager.load(name)
            logger.info("model '%s' (re)loaded after a repository change", name)
        except ModelgateError as exc:
            logger.error("model '%s' failed to (re)load: %s", name, exc.message)
