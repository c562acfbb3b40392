"""The engine's own process: a busy loop that steps the engine while it has work.

It speaks the typed messages of engine_messages.py with its clients (engine_clients.py): the server that
started it, on two one-way pipes, and frontend workers attached through a Unix socket. Requests arrive checked (the server
validates them once); the engine's own guards (a prompt that cannot fit) still answer rather than hang.
"""

from __future__ import annotations

import gc
import logging
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from modelgate.backends.llm import parallel
from modelgate.backends.llm.engine_clients import EngineClientEnd, EngineClients
from modelgate.backends.llm.engine_config import EngineConfig
from modelgate.backends.llm.engine_messages import (
    AbortRequest,
    AddRequest,
    EngineFailed,
    EngineReady,
    RequestOutput,
    Shutdown,
    ToEngine,
    send,
)

logger = logging.getLogger(__name__)


def engine_main(
    model_dir: str,
    config_json: str,
    inbox: Connection,
    outbox: Connection,
    attach_address: str | None = None,
    authkey: bytes | None = None,
) -> None:
    """Entry point of the engine process. With `attach_address`, frontend workers may attach there (with
    `authkey`) once the engine is ready (engine_clients.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s engine: %(message)s")
    parallel.report_start_failure = lambda reason: send(outbox, EngineFailed(reason))  # a rank dying at load
    try:
        from modelgate.backends.llm.engine import LLMEngine
        from modelgate.backends.llm.step_profiler import StepProfiler

        engine = LLMEngine(Path(model_dir), EngineConfig.model_validate_json(config_json))
        profiler = StepProfiler.from_environment(engine.step_counts)  # a bad setting fails the start, named
    except Exception as exc:  # report why, the server marks the model UNAVAILABLE
        send(outbox, EngineFailed(f"{type(exc).__name__}: {exc}"))
        return
    # What is built by now (the model, compiled kernels, CUDA graphs) lives as long as the process: frozen, a
    # full garbage collection no longer walks it. Unfrozen, one took 76 ms for the tiny model's 200k objects on
    # the CI machine, and the collector starts one whenever enough new objects survived: in the middle of a step.
    gc.collect()
    gc.freeze()
    ready = EngineReady(engine.runner.num_kv_blocks, engine.max_model_len, tuple(engine.eos_token_ids))
    parallel.report_start_failure = None
    clients = EngineClients(EngineClientEnd(inbox, outbox, is_owner=True))
    if attach_address is not None:
        clients.listen(attach_address, authkey, ready)
    send(outbox, ready)
    _serve(engine, clients, profiler)


def _serve(engine, clients: EngineClients, profiler=None) -> None:
    """Step the engine while it has work; `profiler` (a StepProfiler) profiles a window of the steps."""
    while True:
        # Block only when idle; otherwise take whatever arrived and step again.
        timeout = 0 if engine.has_unfinished else None
        while waiting := clients.wait_for_messages(timeout):
            for client in waiting:
                if not _take_messages(engine, clients, client):
                    return
            timeout = 0
        try:
            if profiler is not None and not profiler.is_done:
                profiler.before_step()
                outputs = engine.step()
                profiler.after_step()
            else:
                outputs = engine.step()
        except Exception:
            logger.error("engine step failed:\n%s", traceback.format_exc())
            outputs = _abort_everything(engine)
        if outputs:
            for client in clients.deliver(outputs, engine.stats()):
                _abort_all(engine, clients, client)


def _take_messages(engine, clients: EngineClients, client: EngineClientEnd) -> bool:
    """Apply what `client` sent; False when the engine must stop (the owner said so, or is gone)."""
    try:
        message = clients.receive(client)
    except (EOFError, OSError):
        if client.is_owner:
            return False
        _abort_all(engine, clients, client)
        return True
    if isinstance(message, Shutdown):
        if client.is_owner:
            return False
        _abort_all(engine, clients, client)  # a worker leaving: its requests go with it
        return True
    if isinstance(message, AddRequest):
        clients.adopt_request(client, message.request_id)
    finished = _handle(engine, message)
    if finished is not None:
        for gone in clients.deliver([finished], engine.stats()):
            _abort_all(engine, clients, gone)
    return True


def _abort_all(engine, clients: EngineClients, client: EngineClientEnd) -> None:
    """An attached client went away: abort its requests (their outputs have nobody to go to)."""
    for request_id in clients.detach(client):
        engine.abort(request_id)


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
