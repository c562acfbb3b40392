"""`modelgate serve` as a child process on free local ports, for as long as one candidate is measured.

The server runs in a session of its own (Ctrl-C reaches tune, which stops it) with its output in a log file.
`serve_repository` yields once the model is READY; it raises ServerStartError when the server exits first, the
model fails to load (the repository index's reason) or `start_timeout_s` passes, and DeadlineReached when the
caller's `deadline` (time.monotonic) passes first. Leaving the block stops the server with SIGTERM and waits
until every process of its session is gone (the LLM engine frees its GPU memory before the next candidate
starts); what is still there after the grace period is killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_POLL_S = 0.25
_EXIT_TIMEOUT_S = 10  # the server's --exit-timeout-secs
_STOP_GRACE_S = _EXIT_TIMEOUT_S + 30
_LOG_TAIL_CHARS = 2000


class ServerStartError(RuntimeError):
    """The model was not served with these settings; the message says why (the candidate failed)."""


class DeadlineReached(RuntimeError):
    """The caller's deadline passed before the model was ready (the time budget, not the candidate)."""


@contextmanager
def serve_repository(
    repository: Path, model: str, log_path: Path, start_timeout_s: float, deadline: float
) -> Iterator[str]:
    """Serve `repository`; yields the HTTP url (host:port) once `model` is ready."""
    http_port, grpc_port, metrics_port = free_ports(3)
    command = [sys.executable, "-m", "modelgate", "serve", "--model-repository", str(repository)]
    command += ["--http-address", "127.0.0.1", "--http-port", str(http_port)]
    command += ["--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port), "--allow-grpc", "false"]
    command += ["--metrics-port", str(metrics_port), "--allow-metrics", "false"]
    command += ["--exit-timeout-secs", str(_EXIT_TIMEOUT_S)]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"127.0.0.1:{http_port}"
        _wait_until_ready(process, url, model, Path(log_path), time.monotonic() + start_timeout_s, deadline)
        yield url
    finally:
        stop(process)


def free_ports(count: int) -> list[int]:
    """Ports the kernel had free a moment ago (all held at once, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then wait for the server and the rest of its session; SIGKILL what outlives the grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    give_up = time.monotonic() + _STOP_GRACE_S
    try:
        process.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    while _session_alive(process.pid) and time.monotonic() < give_up:
        time.sleep(_POLL_S)
    if _session_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _session_alive(session_id: int) -> bool:
    """Whether a process of the session still runs (zombies, which no init may reap in a container, do not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(session_id, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses, so split after the last ')'
            state, _, _, session = stat.read_text().rpartition(")")[2].split()[:4]
        except (OSError, ValueError):
            continue  # gone while we looked
        if int(session) == session_id and state not in ("Z", "X"):
            return True
    return False


def _wait_until_ready(
    process: subprocess.Popen, url: str, model: str, log_path: Path, start_deadline: float, deadline: float
) -> None:
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"modelgate serve exited with code {process.returncode}: {_tail(log_path)}")
        state, reason = _model_state(url, model)
        if state == "READY":
            return
        if state == "UNAVAILABLE" and reason:
            raise ServerStartError(f"the model did not load: {reason}")
        now = time.monotonic()
        if now > deadline:
            raise DeadlineReached("the time budget ran out while the server was starting")
        if now > start_deadline:
            raise ServerStartError(f"the model was not ready within the start timeout: {_tail(log_path)}")
        time.sleep(_POLL_S)


def _model_state(url: str, model: str) -> tuple[str | None, str]:
    """(state, reason) of the model's version in the repository index; (None, '') while the server is not up."""
    request = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            entries = json.loads(response.read())
    except (OSError, ValueError):  # not listening yet, or an answer cut short
        return None, ""
    for entry in entries:
        if entry.get("name") == model:
            return entry.get("state"), entry.get("reason", "")
    return None, ""


def _tail(log_path: Path) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return " ".join(text[-_LOG_TAIL_CHARS:].split()) or "(empty server log)"
