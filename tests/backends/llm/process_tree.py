"""Processes of this machine by parent, read from /proc (Linux): parallel-engine tests find and kill ranks."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest


def spawned_children(parent_pid: int) -> list[int]:
    """The running processes that `parent_pid` started with multiprocessing "spawn" (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not is_running(int(entry.name)):
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == parent_pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan that exited may wait to be reaped by whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def assert_start_fails_when_a_worker_rank_dies(checkpoint, config, message_pattern: str) -> None:
    """Start an engine of several ranks (EngineClient: the engine process spawns ranks 1..N-1) and SIGKILL its
    worker ranks as soon as they exist: rank 0 cannot be ready before they join it, so the start must fail with
    EngineStartError matching `message_pattern`."""
    from modelgate.backends.llm.engine_client import EngineClient, EngineStartError

    killed = threading.Event()

    def kill_workers():
        deadline = time.monotonic() + 60
        while not killed.is_set() and time.monotonic() < deadline:
            for engine_pid in spawned_children(os.getpid()):
                for worker_pid in spawned_children(engine_pid):
                    os.kill(worker_pid, signal.SIGKILL)
                    killed.set()
            time.sleep(0.05)

    killer = threading.Thread(target=kill_workers, daemon=True)
    killer.start()
    with pytest.raises(EngineStartError, match=message_pattern):
        EngineClient(checkpoint, config, on_outputs=lambda step: None, on_exit=lambda: None, start_timeout_s=60)
    assert killed.is_set()
    killer.join()
