"""Processes of this machine by parent, read from /proc (Linux): tensor-parallel tests find and kill ranks."""

from __future__ import annotations

from pathlib import Path


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
