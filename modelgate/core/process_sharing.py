"""Whether this process shares the processes behind its model instances with frontend workers, and how.

The server turns sharing on when it starts frontend worker processes (--http-workers above 1). A backend whose
instances do their work in a process of their own (the LLM engine) then has that process listen on a Unix
socket in a directory that only the server's user can enter; a worker must prove it knows the server's key
(multiprocessing's HMAC handshake) before it may send anything. A worker process sets the same key (its
socket directory is the server's) to attach.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessSharing:
    socket_dir: Path  # created 0700 by the server; Unix socket paths must stay under ~100 characters
    authkey: bytes

    def new_address(self) -> str:
        """A socket path for one instance's process: kept across its restarts, never reused by another."""
        return str(self.socket_dir / f"instance-{next(_numbers)}-{uuid.uuid4().hex[:8]}.sock")


_numbers = itertools.count()
_sharing: ProcessSharing | None = None


def share_processes(sharing: ProcessSharing | None) -> None:
    """Set (or with None, end) sharing for instances loaded from now on in this process."""
    global _sharing
    _sharing = sharing


def process_sharing() -> ProcessSharing | None:
    return _sharing
