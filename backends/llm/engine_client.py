"""The server side of the engine process: start it, send requests, receive outputs on a thread."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import (
    AbortRequest,
    AddRequest,
    EngineFailed,
    EngineReady,
    Shutdown,
    StepOutputs,
    ToEngine,
    receive_from_engine,
    send,
)
from modelgate.backends.llm.engine_process import engine_main

logger = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    pass


class EngineClient:
    """Owns one engine process.

    `on_outputs(step)` runs on the client's reader thread for every StepOutputs; `on_exit()` runs there once
    when the engine's output pipe closes (the process exited or was shut down).
    """

    def __init__(
        self,
        model_dir: Path,
        config: EngineConfig,
        on_outputs: Callable[[StepOutputs], None],
        on_exit: Callable[[], None],
        start_timeout_s: float = 600,
    ):
        context = multiprocessing.get_context("spawn")
        child_inbox, self._inbox = context.Pipe(duplex=False)
        self._outbox, child_outbox = context.Pipe(duplex=False)
        self.process = context.Process(
            target=engine_main,
            args=(str(model_dir), config.model_dump_json(), child_inbox, child_outbox),
            name="modelgate-llm-engine",
            daemon=True,
        )
        self.process.start()
        child_inbox.close()
        child_outbox.close()
        self.info = self._wait_ready(start_timeout_s)
        self._send_lock = threading.Lock()
        self._on_outputs = on_outputs
        self._on_exit = on_exit
        self._reader = threading.Thread(target=self._read_forever, name="llm-engine-reader", daemon=True)
        self._reader.start()

    def add(self, request: AddRequest) -> None:
        """Queue a request, checked already (generation_request.py): the engine takes it as it is."""
        self._send(request)

    def abort(self, request_id: str) -> None:
        try:
            self._send(AbortRequest(request_id))
        except OSError:
            pass  # the engine is gone, and its requests with it

    def shutdown(self, timeout_s: float = 30) -> None:
        try:
            self._send(Shutdown())
        except OSError:
            pass
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)

    @property
    def is_alive(self) -> bool:
        return self.process.is_alive()

    def _send(self, message: ToEngine) -> None:
        with self._send_lock:
            send(self._inbox, message)

    def _wait_ready(self, timeout_s: float) -> EngineReady:
        if not self._outbox.poll(timeout_s):
            self.process.terminate()
            raise EngineStartError(f"the LLM engine did not start within {timeout_s:.0f} s")
        try:
            message = receive_from_engine(self._outbox)
        except EOFError:
            raise EngineStartError(f"the LLM engine process exited with code {self.process.exitcode}") from None
        if isinstance(message, EngineFailed):
            self.process.join(10)
            raise EngineStartError(message.message)
        if not isinstance(message, EngineReady):
            self.process.terminate()
            raise EngineStartError(f"the LLM engine sent {type(message).__name__} before it was ready")
        return message

    def _read_forever(self) -> None:
        while True:
            try:
                message = receive_from_engine(self._outbox)
            except (EOFError, OSError):
                logger.info("LLM engine output pipe closed")
                self._on_exit()
                return
            if not isinstance(message, StepOutputs):
                logger.warning("the LLM engine sent %s after it was ready", type(message).__name__)
                continue
            try:
                self._on_outputs(message)
            except Exception:  # never let one bad output stop the reader
                logger.exception("handling engine outputs failed")
