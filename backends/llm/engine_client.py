"""The server side of the engine process: start it, send requests, receive outputs on a thread."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_process import engine_main, receive, send
from modelgate.backends.llm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

OutputsCallback = Callable[[list[dict], dict], None]


class EngineStartError(RuntimeError):
    pass


class EngineClient:
    """Owns one engine process. `on_outputs(outputs, stats)` runs on the client's reader thread."""

    def __init__(
        self, model_dir: Path, config: EngineConfig, on_outputs: OutputsCallback, start_timeout_s: float = 600
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
        self._reader = threading.Thread(target=self._read_forever, name="llm-engine-reader", daemon=True)
        self._reader.start()

    def add(self, request_id: str, prompt_token_ids: list[int], sampling: SamplingParams) -> None:
        self._send(
            {
                "type": "add",
                "request_id": request_id,
                "prompt_token_ids": prompt_token_ids,
                "sampling": sampling.model_dump(),
            }
        )

    def abort(self, request_id: str) -> None:
        self._send({"type": "abort", "request_id": request_id})

    def shutdown(self, timeout_s: float = 30) -> None:
        try:
            self._send({"type": "shutdown"})
        except OSError:
            pass
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)

    @property
    def is_alive(self) -> bool:
        return self.process.is_alive()

    def _send(self, message: dict) -> None:
        with self._send_lock:
            send(self._inbox, message)

    def _wait_ready(self, timeout_s: float) -> dict:
        if not self._outbox.poll(timeout_s):
            self.process.terminate()
            raise EngineStartError(f"the LLM engine did not start within {timeout_s:.0f} s")
        try:
            message = receive(self._outbox)
        except EOFError:
            raise EngineStartError(f"the LLM engine process exited with code {self.process.exitcode}") from None
        if message["type"] != "ready":
            self.process.join(10)
            raise EngineStartError(message.get("message", "the LLM engine failed to start"))
        return message

    def _read_forever(self) -> None:
        while True:
            try:
                message = receive(self._outbox)
            except (EOFError, OSError):
                logger.info("LLM engine output pipe closed")
                self._on_outputs([], {"engine_exited": True})
                return
            if message["type"] == "outputs":
                try:
                    self._on_outputs(message["outputs"], message["stats"])
                except Exception:  # never let one bad output stop the reader
                    logger.exception("handling engine outputs failed")
