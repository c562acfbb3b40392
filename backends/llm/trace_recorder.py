"""A per-request trace of an LLM model: one JSON line per finished request, in a rotating file.

Off unless the model's config.pbtxt sets it:

    parameters { key: "trace_file" value { string_value: "/var/log/modelgate/tiny_llm.jsonl" } }
    parameters { key: "trace_max_bytes" value { string_value: "104857600" } }   # default 100 MiB
    parameters { key: "trace_backup_count" value { string_value: "5" } }        # default 5

A line: {"timestamp": arrival (unix seconds), "model", "version", "isl", "osl", "ttft_s", "ttc_s",
"finish_reason"}; ttft_s and ttc_s are seconds from arrival to the first and the last token as
the server sends them (ttft_s is null when no token came). `modelgate size traffic` and
`modelgate bench llm --pattern trace` read these files.

Lines are written on the engine client's reader thread, never on the event loop, through the
standard library's RotatingFileHandler: past trace_max_bytes the file becomes trace_file.1
(older ones shift up to trace_backup_count); 0 for either means the file is never rotated.
Instances that name the same file share one handler (the first one's rotation settings).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelgate.backends.llm.engine_messages import RequestOutput
from modelgate.core.errors import ConfigError
from modelgate.core.path_parameters import TRACE_FILE

# trace_file names a file: core.path_parameters registers it, so only the repository's config file may set it.
TRACE_PARAMETERS = (TRACE_FILE, "trace_max_bytes", "trace_backup_count")


class TraceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trace_file: Path
    trace_max_bytes: int = Field(100 * 2**20, ge=0)
    trace_backup_count: int = Field(5, ge=0)


class _SharedHandlers:
    """One handler per file for the whole process: two handlers rotating one file would lose lines
    (several instances of a model, or two models, may name the same trace_file)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.handlers: dict[Path, tuple[RotatingFileHandler, int]] = {}

    def acquire(self, config: TraceConfig) -> RotatingFileHandler:
        path = config.trace_file.resolve()
        with self.lock:
            handler, users = self.handlers.get(path, (None, 0))
            if handler is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                handler = RotatingFileHandler(
                    path,
                    maxBytes=config.trace_max_bytes,
                    backupCount=config.trace_backup_count,
                    encoding="utf-8",
                    delay=True,
                )
            self.handlers[path] = (handler, users + 1)
            return handler

    def release(self, handler: RotatingFileHandler) -> None:
        path = Path(handler.baseFilename)
        with self.lock:
            _, users = self.handlers[path]
            if users > 1:
                self.handlers[path] = (handler, users - 1)
                return
            del self.handlers[path]
        handler.close()


_HANDLERS = _SharedHandlers()


class TraceRecorder:
    """Appends finished requests to the trace; `record` is thread-safe (the handler locks)."""

    def __init__(self, config: TraceConfig, model: str, version: str):
        self.handler = _HANDLERS.acquire(config)
        self.model, self.version = model, version

    def record(
        self,
        arrival: float,
        first_token: float | None,
        finished: float,
        engine_ttft: float | None,
        output: RequestOutput,
    ) -> None:
        """`arrival`, `first_token`, `finished`: time.monotonic() readings; `engine_ttft`: the engine's own time to
        first token (seconds, None without a token); `output`: the engine's last output."""
        handler = self.handler
        if handler is None:  # closed (the model unloaded while its last outputs were read)
            return
        line = {
            "timestamp": round(time.time() - (time.monotonic() - arrival), 6),
            "model": self.model,
            "version": self.version,
            "isl": output.num_prompt_tokens,
            "osl": output.num_output_tokens,
            "ttft_s": None if first_token is None else round(first_token - arrival, 6),
            "engine_ttft_s": None if engine_ttft is None else round(engine_ttft, 6),
            "ttc_s": round(finished - arrival, 6),
            "finish_reason": output.finish_reason,
        }
        handler.handle(logging.makeLogRecord({"msg": json.dumps(line), "levelno": logging.INFO}))

    def close(self) -> None:
        if self.handler is not None:
            _HANDLERS.release(self.handler)
            self.handler = None


def trace_recorder(model: str, version: str, parameters: dict[str, str]) -> TraceRecorder | None:
    """The model's recorder when its parameters set `trace_file`; ConfigError for bad values."""
    fields = {key: value for key, value in parameters.items() if key in TRACE_PARAMETERS}
    if TRACE_FILE not in fields:
        if fields:
            raise ConfigError(f"model '{model}' config", "parameters", f"{sorted(fields)} need 'trace_file'")
        return None
    try:
        config = TraceConfig.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"model '{model}' config", "parameters", problems) from None
    return TraceRecorder(config, model, version)
