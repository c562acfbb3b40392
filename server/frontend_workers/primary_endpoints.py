"""Where a frontend worker listens (the ports the server bound) and where it sends what it does not serve (the
server's Unix sockets, in the server's private directory). A protocol the server does not serve has neither."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PrimaryEndpoints:
    socket_dir: Path  # 0700, the server's own: the engines' sockets are there too
    http_port: int | None = None  # the bound port (the server may have asked for port 0)
    grpc_port: int | None = None

    @property
    def http_socket(self) -> str:
        return str(self.socket_dir / "server.sock")

    @property
    def grpc_socket(self) -> str:
        return str(self.socket_dir / "grpc.sock")
