"""The engine's own process: a busy loop that steps the engine while it has work.

It speaks the typed messages of engine_messages.py on two one-way pipes. Requests arrive checked (the server
validates them once); the engine's own guards (a prompt that cannot fit) still answer rather than hang.
"""

from __future__ import annotations

import logging
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import (
    AbortRequest,
    AddRequest,
    EngineFailed,
    EngineReady,
    RequestOutput,
    Shutdown,
    StepOutputs,
    ToEngine,
    receive_to_engine,
    send,
)

logger = logging.getLogger(__name__)


def engine_main(model_dir: str, config_json: str, inbox: Connection, outbox: Connection) -> None:
    """Entry point of the engine process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s engine: %(message)s")
    try:
        from modelgate.backends.llm.engine import LLMEngine

        engine = LLMEngine(Path(model_dir), EngineConfig.model_validate_json(config_json))
    except Exception as exc:  # report why, the server marks the model UNAVAILABLE
        send(outbox, EngineFailed(f"{type(exc).__name__}: {exc}"))
        return
    send(outbox, EngineReady(engine.runner.num_kv_blocks, engine.max_model_len, tuple(engine.eos_token_ids)))
    _serve(engine, inbox, outbox)


def _serve(engine, inbox: Connection, outbox: Connection) -> None:
    while True:
        # Block only when idle; otherwise take whatever arrived and step again.
        timeout = 0 if engine.has_unfinished else None
        while inbox.poll(timeout):
            message = receive_to_engine(inbox)
            if isinstance(message, Shutdown):
                return
            finished = _handle(engine, message)
            if finished is not None:
                send(outbox, StepOutputs([finished], engine.stats()))
            timeout = 0
        try:
            outputs = engine.step()
        except Exception:
            logger.error("engine step failed:\n%s", traceback.format_exc())
            outputs = _abort_everything(engine)
        if outputs:
            send(outbox, StepOutputs(outputs, engine.stats()))


def _handle(engine, message: ToEngine) -> RequestOutput | None:
    """Apply one message; the request's final output when the message ended it at once."""
    if isinstance(message, AddRequest):
        try:
            engine.add_request(message.request_id, message.prompt_token_ids, message.sampling)
        except ValueError as exc:  # never reached through the server, which checks first; still, never hang
            logger.error("refused request: %s", exc)
            return RequestOutput(message.request_id, [], "", True, "abort", len(message.prompt_token_ids), 0, 0)
        return None
    if isinstance(message, AbortRequest):
        return engine.abort(message.request_id)
    raise AssertionError(f"unhandled engine message {message!r}")


def _abort_everything(engine) -> list[RequestOutput]:
    """After a failed step no request can be trusted to continue: finish them all as aborted."""
    ids = list(engine.scheduler.requests)
    return [output for output in (engine.abort(i) for i in ids) if output is not None]
