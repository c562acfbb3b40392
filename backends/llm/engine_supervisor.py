"""Keeps one LLM engine process running: started at load, started again with back-off when it dies.

An engine that exits while the model is loaded (a crash, the OOM killer, a signal) is reported down at once:
`on_down(reason)` fails the requests it held and marks the model UNAVAILABLE (per-model readiness false, new
requests answered 503 naming the model). Then new engines are started, waiting RESTART_BACKOFF_S between tries,
doubling up to MAX_BACKOFF_S, at most MAX_START_ATTEMPTS times in a row; the first that starts serves
(`on_up()`: READY again, counted in `modelgate_llm_engine_restarts_total` and the model's statistics). An
engine that cannot start again leaves the model UNAVAILABLE until it is loaded again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from modelgate.backends.llm.engine_client import EngineClient, EngineStartError
from modelgate.backends.llm.parallel import RANK_FAILED_EXIT_CODE

logger = logging.getLogger(__name__)

MAX_START_ATTEMPTS = 5
RESTART_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
EXIT_WAIT_S = 5.0  # for the dead process to be reaped, so that its exit code can be told

# Makes an engine client whose `on_exit` callback is the argument.
EngineFactory = Callable[[Callable[[], None]], EngineClient]


class EngineSupervisor:
    """`client` is the engine serving now, None while it is down; `down_reason` says why it is."""

    def __init__(
        self,
        model_name: str,
        start_engine: EngineFactory,
        on_down: Callable[[str], None],
        on_up: Callable[[], None],
    ):
        """Starts the first engine; its EngineStartError reaches the caller (the load fails)."""
        self.model_name = model_name
        self._start_engine = start_engine
        self._on_down = on_down
        self._on_up = on_up
        self._lock = threading.Lock()
        self._generation = 0
        self._is_closing = False
        self._restarter: threading.Thread | None = None
        self.down_reason = ""
        self.client: EngineClient | None = self._start()

    def shutdown(self) -> None:
        """Stop the engine for good; a restart in progress stops its engine as soon as it has started."""
        with self._lock:
            self._is_closing = True
            client, self.client = self.client, None
        if client is not None:
            client.shutdown()

    def _start(self) -> EngineClient:
        with self._lock:
            self._generation += 1
            generation = self._generation
        return self._start_engine(lambda: self._exited(generation))

    def _exited(self, generation: int) -> None:
        """On the dead engine's reader thread, once its output pipe closed."""
        with self._lock:
            if self._is_closing or generation != self._generation or self.client is None:
                return  # an engine shut down on purpose, or one already replaced
            client, self.client = self.client, None
        client.process.join(EXIT_WAIT_S)
        self.down_reason = (
            f"the LLM engine of model '{self.model_name}' stopped ({_how(client.process.exitcode)}); restarting it"
        )
        logger.error("%s", self.down_reason)
        self._on_down(self.down_reason)
        self._restarter = threading.Thread(target=self._restart, name=f"llm-restart-{self.model_name}", daemon=True)
        self._restarter.start()

    def _restart(self) -> None:
        for attempt in range(MAX_START_ATTEMPTS):
            time.sleep(min(RESTART_BACKOFF_S * 2**attempt, MAX_BACKOFF_S))
            if self._is_closing:
                return
            try:
                client = self._start()
            except EngineStartError as exc:
                logger.error("LLM model '%s': restart %d failed: %s", self.model_name, attempt + 1, exc)
                continue
            with self._lock:
                serving = not self._is_closing
                if serving:
                    self.client = client
                    self.down_reason = ""
            if not serving:  # unloaded while it started
                client.shutdown()
                return
            logger.info("LLM model '%s': engine started again", self.model_name)
            self._on_up()
            return
        self.down_reason = (
            f"the LLM engine of model '{self.model_name}' stopped and did not start again after "
            f"{MAX_START_ATTEMPTS} tries; load the model again"
        )
        logger.error("%s", self.down_reason)
        self._on_down(self.down_reason)


def _how(exit_code: int | None) -> str:
    if exit_code is None:
        return "its process did not exit"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    if exit_code == RANK_FAILED_EXIT_CODE:
        return (
            f"exit code {exit_code}: one of its parallel ranks (tensor or pipeline) died; the engine's log says which"
        )
    return f"exit code {exit_code}"
