"""Whether this process's LLM engines take frontend workers, and where they listen for them.

The server turns sharing on when it starts frontend worker processes (--http-workers above 1): each engine it
starts then listens on a Unix socket in a directory that only the server's user can enter, and a worker must
prove it knows the server's key (multiprocessing's HMAC handshake) before it may send anything.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineSharing:
    socket_dir: Path  # created 0700 by the server; Unix socket paths must stay under ~100 characters
    authkey: bytes

    def new_address(self) -> str:
        """A socket path for one engine instance: kept across its restarts, never reused by another."""
        return str(self.socket_dir / f"engine-{next(_numbers)}-{uuid.uuid4().hex[:8]}.sock")


@dataclass(frozen=True)
class EngineAddress:
    """Where a worker attaches to one engine."""

    path: str
    authkey: bytes


_numbers = itertools.count()
_sharing: EngineSharing | None = None


def share_engines(sharing: EngineSharing | None) -> None:
    """Set (or with None, end) sharing for engines started from now on in this process."""
    global _sharing
    _sharing = sharing


def engine_sharing() -> EngineSharing | None:
    return _sharing
