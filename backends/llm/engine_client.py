"""The server side of the engine process: start it (or attach to it), send requests, receive outputs on a thread."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import (
    AbortRequest,
    AddRequest,
    EncodedStep,
    EngineFailed,
    EngineReady,
    Shutdown,
    ToEngine,
    receive_from_engine,
    receive_from_engine_lazily,
    send,
)
from modelgate.backends.llm.engine_process import engine_main

logger = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    pass


class EngineConnection:
    """Requests to one engine, and its outputs read on a thread of this object's own.

    `on_outputs(step)` runs on the reader thread for every StepOutputs, given still encoded (EncodedStep: decoded
    where its outputs are read); `on_exit()` runs there once when the engine's side closes (its process exited or was shut down, or this end was closed).
    """

    def __init__(
        self,
        inbox: Connection,
        outbox: Connection,
        on_outputs: Callable[[EncodedStep], None],
        on_exit: Callable[[], None],
        start_timeout_s: float,
    ):
        """`inbox`: where requests go; `outbox`: where the engine's messages come from (the same duplex
        connection for an attached worker). Waits for EngineReady (EngineStartError otherwise)."""
        self._inbox = inbox
        self._outbox = outbox
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

    @property
    def is_alive(self) -> bool:
        return self._reader.is_alive()

    def _send(self, message: ToEngine) -> None:
        with self._send_lock:
            send(self._inbox, message)

    def _starting_failed(self, engine_said_so: bool) -> None:
        """The engine did not get ready: undo what was started. `engine_said_so`: it sent EngineFailed (or
        closed its end), rather than staying silent past the time limit."""

    def _wait_ready(self, timeout_s: float) -> EngineReady:
        if not self._outbox.poll(timeout_s):
            self._starting_failed(engine_said_so=False)
            raise EngineStartError(f"the LLM engine did not start within {timeout_s:.0f} s")
        try:
            message = receive_from_engine(self._outbox)
        except (EOFError, OSError):
            self._starting_failed(engine_said_so=True)
            raise EngineStartError(self._closed_before_ready()) from None
        if isinstance(message, EngineFailed):
            self._starting_failed(engine_said_so=True)
            raise EngineStartError(message.message)
        if not isinstance(message, EngineReady):
            self._starting_failed(engine_said_so=False)
            raise EngineStartError(f"the LLM engine sent {type(message).__name__} before it was ready")
        return message

    def _closed_before_ready(self) -> str:
        return "the LLM engine closed the connection before it was ready"

    def _read_forever(self) -> None:
        while True:
            try:
                message = receive_from_engine_lazily(self._outbox)
            except (EOFError, OSError):
                logger.info("LLM engine output pipe closed")
                self._on_exit()
                return
            if not isinstance(message, EncodedStep):
                logger.warning("the LLM engine sent %s after it was ready", type(message).__name__)
                continue
            try:
                self._on_outputs(message)
            except Exception:  # never let one bad output stop the reader
                logger.exception("handling engine outputs failed")


class EngineClient(EngineConnection):
    """Owns one engine process: starts it, and stops it at `shutdown`.

    With `attach_address` (a Unix socket path in a directory private to this server) and `authkey`, frontend
    workers can attach to the engine there (EngineAttachment); it binds the same path again when restarted.
    """

    def __init__(
        self,
        model_dir: Path,
        config: EngineConfig,
        on_outputs: Callable[[EncodedStep], None],
        on_exit: Callable[[], None],
        start_timeout_s: float = 600,
        attach_address: str | None = None,
        authkey: bytes | None = None,
    ):
        context = multiprocessing.get_context("spawn")
        child_inbox, inbox = context.Pipe(duplex=False)
        outbox, child_outbox = context.Pipe(duplex=False)
        self.process = context.Process(
            target=engine_main,
            args=(str(model_dir), config.model_dump_json(), child_inbox, child_outbox, attach_address, authkey),
            name="modelgate-llm-engine",
            daemon=True,
        )
        self.process.start()
        child_inbox.close()
        child_outbox.close()
        super().__init__(inbox, outbox, on_outputs, on_exit, start_timeout_s)

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

    def _starting_failed(self, engine_said_so: bool) -> None:
        if engine_said_so:
            self.process.join(10)  # it is on its way out
        else:
            self.process.terminate()

    def _closed_before_ready(self) -> str:
        self.process.join(5)
        return f"the LLM engine process exited with code {self.process.exitcode}"


class EngineAttachment(EngineConnection):
    """A frontend worker's connection to an engine that another process (the server) owns.

    Raises EngineStartError when the engine cannot be reached (not started yet, or restarting). `shutdown`
    closes only this connection: the engine aborts this worker's requests and goes on serving the others.
    """

    def __init__(
        self,
        address: str,
        authkey: bytes,
        on_outputs: Callable[[EncodedStep], None],
        on_exit: Callable[[], None],
        start_timeout_s: float = 30,
    ):
        try:
            connection = Client(address, family="AF_UNIX", authkey=authkey)
        except (OSError, EOFError, AuthenticationError) as exc:
            raise EngineStartError(f"cannot attach to the LLM engine at {address}: {exc}") from None
        self._connection = connection
        super().__init__(connection, connection, on_outputs, on_exit, start_timeout_s)

    def shutdown(self, timeout_s: float = 5) -> None:
        """The engine closes its end on Shutdown, which ends the reader; only then is this end closed (closing
        it under the reader's feet would fail its read with something other than EOF)."""
        try:
            self._send(Shutdown())
        except OSError:
            pass
        self._reader.join(timeout_s)
        if not self._reader.is_alive():
            self._connection.close()

    def _starting_failed(self, engine_said_so: bool) -> None:
        self._connection.close()
