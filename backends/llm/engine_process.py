"""The engine's own process: a busy loop that steps the engine while it has work.

Messages both ways are JSON documents on multiprocessing pipes (never pickle: requests come
from the network). In: {"type": "add", ...}, {"type": "abort", "request_id"}, {"type": "shutdown"}.
Out: {"type": "ready", ...} or {"type": "failed", "message"} once, then
{"type": "outputs", "outputs": [...], "stats": {...}} per step that produced outputs.
"""

from __future__ import annotations

import json
import logging
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


def send(connection: Connection, message: dict) -> None:
    connection.send_bytes(json.dumps(message, separators=(",", ":")).encode())


def receive(connection: Connection) -> dict:
    return json.loads(connection.recv_bytes())


def engine_main(model_dir: str, config_json: str, inbox: Connection, outbox: Connection) -> None:
    """Entry point of the engine process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s engine: %(message)s")
    try:
        from modelgate.backends.llm.engine import LLMEngine

        engine = LLMEngine(Path(model_dir), EngineConfig.model_validate_json(config_json))
    except Exception as exc:  # report why, the server marks the model UNAVAILABLE
        send(outbox, {"type": "failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    send(
        outbox,
        {
            "type": "ready",
            "num_kv_blocks": engine.runner.num_kv_blocks,
            "max_model_len": engine.max_model_len,
            "eos_token_ids": list(engine.eos_token_ids),
        },
    )
    _serve(engine, inbox, outbox)


def _serve(engine, inbox: Connection, outbox: Connection) -> None:
    while True:
        # Block only when idle; otherwise take whatever arrived and step again.
        timeout = 0 if engine.has_unfinished else None
        while inbox.poll(timeout):
            message = receive(inbox)
            if message["type"] == "shutdown":
                return
            aborted = _handle(engine, message)
            if aborted is not None:
                send(outbox, {"type": "outputs", "outputs": [aborted.to_dict()], "stats": engine.stats()})
            timeout = 0
        try:
            outputs = engine.step()
        except Exception:
            logger.error("engine step failed:\n%s", traceback.format_exc())
            outputs = _abort_everything(engine)
        if outputs:
            send(outbox, {"type": "outputs", "outputs": [o.to_dict() for o in outputs], "stats": engine.stats()})


def _handle(engine, message: dict):
    if message["type"] == "add":
        try:
            sampling = SamplingParams.model_validate(message["sampling"])
            engine.add_request(message["request_id"], message["prompt_token_ids"], sampling)
        except ValueError as exc:  # never reached through the server, which checks first; still, never hang
            logger.error("refused request: %s", exc)
            return _refused(message)
        return None
    if message["type"] == "abort":
        return engine.abort(message["request_id"])
    logger.warning("unknown engine message type %r", message["type"])
    return None


def _refused(message: dict):
    from modelgate.backends.llm.output_processor import RequestOutput

    return RequestOutput(message["request_id"], [], "", True, "abort", len(message["prompt_token_ids"]), 0, 0)


def _abort_everything(engine) -> list:
    """After a failed step no request can be trusted to continue: finish them all as aborted."""
    ids = list(engine.scheduler.requests)
    return [output for output in (engine.abort(i) for i in ids) if output is not None]
