"""A benchmark's server process pinned to one core: start it, wait until it is ready, stop it.

`pinned` also serves the load generator, so that servers and generator never share a core.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """A server process pinned to one core, and where its log goes."""

    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process (all its threads) and of its live descendants.

        Descendants count because a server's work may run there: Triton's python-backend stubs, or
        modelgate's python models in processes of their own.
        """
        ticks = sum(int(fields[11]) + int(fields[12]) for fields in _stats(self.process_ids()).values())
        return ticks / os.sysconf("SC_CLK_TCK")

    def process_ids(self) -> list[int]:
        """The server's process and its live descendants."""
        children: dict[int, list[int]] = {}
        for pid, fields in _stats(_all_pids()).items():
            children.setdefault(int(fields[1]), []).append(pid)
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _stats(pids: list[int]) -> dict[int, list[str]]:
    """/proc/PID/stat fields after the command name (index 1: parent pid, 11-12: utime, stime); gone ones left out."""
    stats = {}
    for pid in pids:
        try:
            stats[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
    return stats


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(command: list[str], core: int, niceness: int) -> list[str]:
    """`command` bound to `core` with taskset, and under `nice -n niceness` unless that is 0."""
    return ["taskset", "-c", str(core), *(["nice", "-n", str(niceness)] if niceness else []), *command]


def start_server(
    name: str, command: list[str], port: int, core: int, niceness: int, log_dir: Path, env: dict[str, str] | None = None
) -> Server:
    """Start `command` (in the repository root, with `env` or ours) pinned to `core`; wait for /v2/health/ready."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            pinned(command, core, niceness), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(name, process, port, log_path)
    try:
        wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_ready(server: Server, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{_log_tail(server)}")
        if _get_status(server.port, "/v2/health/ready") == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{server.name} not ready after {timeout_s:.0f} s:\n{_log_tail(server)}")


def stop_server(server: Server) -> None:
    """SIGTERM (the benchmarks' servers stop gracefully on it), SIGKILL if it lingers."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def _get_status(port: int, path: str) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None


def _log_tail(server: Server, lines: int = 30) -> str:
    return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
