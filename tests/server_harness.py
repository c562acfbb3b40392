"""Run a real modelgate server in a background thread for tests, on free ports."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

from modelgate.server.runtime import ModelgateServer
from modelgate.server.settings import ServerSettings

EXAMPLE_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"


@dataclass
class RunningServer:
    server: ModelgateServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def run(self, coroutine, timeout: float = 60):
        """Run a coroutine on the server's loop (e.g. `server.poller.poll_once()`) and wait."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


def start_server(repositories: list[Path], ledger=None, **settings) -> RunningServer:
    """Start a server on 127.0.0.1 with ephemeral ports; returns once models are loaded. `ledger`: a
    MemoryLedger over a fake machine (default: this machine's)."""
    options = {
        "http_address": "127.0.0.1",
        "http_port": 0,
        "grpc_address": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "exit_timeout_secs": 10,
    }
    options.update(settings)
    config = ServerSettings(model_repository=repositories, **options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="modelgate-test-server", daemon=True)
    thread.start()
    server = ModelgateServer(config, ledger)
    running = RunningServer(server, loop, thread)
    running.run(server.start())
    return running


def copy_example_model(repository: Path, name: str) -> Path:
    """Copy an example model folder from model_repository/ into `repository`."""
    target = repository / name
    shutil.copytree(EXAMPLE_REPOSITORY / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def write_model(
    repository: Path, name: str, config: str | None, model_py: str, versions=(1,), config_file="config.pbtxt"
) -> Path:
    """Write a python-backend model: `config` (None for no config file) and `model_py` per version."""
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model_dir / config_file).write_text(textwrap.dedent(config))
    for version in versions:
        version_dir = model_dir / str(version)
        version_dir.mkdir(exist_ok=True)
        (version_dir / "model.py").write_text(textwrap.dedent(model_py))
    return model_dir
