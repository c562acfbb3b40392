"""A frontend worker's hold on an engine that the server owns: attached at load, attached again after the
engine restarts.

The server's supervisor (engine_supervisor.py) restarts a dead engine on the same socket path; this side only
notices the connection close (`on_down`: the requests it carried fail), then tries to attach again every
REATTACH_INTERVAL_S until it succeeds (`on_up`) or the model is unloaded here. Same surface as
EngineSupervisor: `client`, `down_reason`, `shutdown()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from modelgate.backends.llm.engine_client import EngineAttachment, EngineStartError
from modelgate.backends.llm.engine_messages import EncodedStep

logger = logging.getLogger(__name__)

REATTACH_INTERVAL_S = 1.0


class AttachedEngine:
    def __init__(
        self,
        model_name: str,
        address: str,
        authkey: bytes,
        on_outputs: Callable[[EncodedStep], None],
        on_down: Callable[[str], None],
        on_up: Callable[[], None],
    ):
        """Attaches at once; EngineStartError reaches the caller (the worker leaves the model to the server)."""
        self.model_name = model_name
        self._address = address
        self._authkey = authkey
        self._on_outputs = on_outputs
        self._on_down = on_down
        self._on_up = on_up
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.down_reason = ""
        self.client: EngineAttachment | None = self._attach()

    def shutdown(self) -> None:
        self._closed.set()
        with self._lock:
            client, self.client = self.client, None
        if client is not None:
            client.shutdown()

    def _attach(self) -> EngineAttachment:
        return EngineAttachment(self._address, self._authkey, self._on_outputs, self._detached)

    def _detached(self) -> None:
        """On the attachment's reader thread, once the engine's side closed."""
        with self._lock:
            if self._closed.is_set() or self.client is None:
                return
            self.client = None
        self.down_reason = f"the LLM engine of model '{self.model_name}' stopped; waiting for it to start again"
        logger.warning("%s", self.down_reason)
        self._on_down(self.down_reason)
        threading.Thread(target=self._reattach, name=f"llm-reattach-{self.model_name}", daemon=True).start()

    def _reattach(self) -> None:
        while not self._closed.wait(REATTACH_INTERVAL_S):
            try:
                client = self._attach()
            except EngineStartError:
                continue  # still restarting
            with self._lock:
                is_wanted = not self._closed.is_set()
                if is_wanted:
                    self.client, self.down_reason = client, ""
            if is_wanted:
                logger.info("LLM model '%s': attached to its engine again", self.model_name)
                self._on_up()
            else:
                client.shutdown()  # unloaded while attaching
            return
