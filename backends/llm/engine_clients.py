"""The engine process's side of its clients: the server that started it, and frontend workers attached to it.

The owner (the server process that started the engine) talks over the two pipes it made. Frontend worker
processes attach later through a Unix socket in a directory private to the server (multiprocessing's
Listener, with the server's authentication key: a process without the key is refused before it can send).
Each request belongs to the client that added it; a step's outputs are split by owner, so that a worker gets
only its own requests' tokens. The owner hears the engine's stats after every step, whoever's outputs they
were: its metrics stay current. A client that goes away has its requests aborted, freeing their KV blocks.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener, wait

from modelgate.backends.llm.engine_messages import (
    EngineReady,
    EngineStats,
    RequestOutput,
    StepOutputs,
    ToEngine,
    receive_to_engine,
    send,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class EngineClientEnd:
    """One client as the engine sees it: where its messages come from and where its outputs go."""

    inbox: Connection
    outbox: Connection
    is_owner: bool = False
    request_ids: set[str] = field(default_factory=set)


class EngineClients:
    """Every client of one engine process; used from the engine's busy loop only (the accept thread hands new
    clients over through `_accepted`)."""

    def __init__(self, owner: EngineClientEnd):
        self.owner = owner
        self._attached: list[EngineClientEnd] = []
        self._by_request: dict[str, EngineClientEnd] = {}
        self._accepted: list[EngineClientEnd] = []
        self._accept_lock = threading.Lock()
        self._wake_reader, self._wake_writer = os.pipe()  # a new client wakes a loop that waits for messages

    def listen(self, address: str, authkey: bytes, ready: EngineReady) -> None:
        """Accept attaching clients at `address` (a Unix socket path) on a thread of their own, so that a
        slow or wrong handshake never holds up a step."""
        if os.path.exists(address):  # a socket left by this engine's predecessor (the engine restarted)
            os.unlink(address)
        listener = Listener(address, family="AF_UNIX", authkey=authkey)
        thread = threading.Thread(
            target=self._accept_forever, args=(listener, ready), name="llm-engine-accept", daemon=True
        )
        thread.start()

    def wait_for_messages(self, timeout: float | None) -> list[EngineClientEnd]:
        """The clients with a message waiting (or gone: their next receive raises EOFError)."""
        self._adopt_accepted()
        inboxes = {client.inbox: client for client in (self.owner, *self._attached)}
        ready = wait([*inboxes, self._wake_reader], timeout)
        if self._wake_reader in ready:
            os.read(self._wake_reader, 4096)
            self._adopt_accepted()
        return [inboxes[connection] for connection in ready if connection in inboxes]

    @staticmethod
    def receive(client: EngineClientEnd) -> ToEngine:
        return receive_to_engine(client.inbox)

    def adopt_request(self, client: EngineClientEnd, request_id: str) -> None:
        client.request_ids.add(request_id)
        self._by_request[request_id] = client

    def detach(self, client: EngineClientEnd) -> list[str]:
        """Forget an attached client that went away; the ids of its requests still running (to abort)."""
        if client in self._attached:
            self._attached.remove(client)
        for request_id in client.request_ids:
            self._by_request.pop(request_id, None)
        client.inbox.close()
        logger.info("a frontend worker detached, %d of its requests aborted", len(client.request_ids))
        return list(client.request_ids)

    def deliver(self, outputs: list[RequestOutput], stats: EngineStats) -> list[EngineClientEnd]:
        """Send each client its outputs (the owner: its own, and the stats in any case); the attached clients
        that could not be written to (gone), for the caller to detach."""
        by_client: dict[EngineClientEnd, list[RequestOutput]] = {self.owner: []}
        for output in outputs:
            client = self._by_request.get(output.request_id, self.owner)
            by_client.setdefault(client, []).append(output)
            if output.finished and self._by_request.pop(output.request_id, None) is not None:
                client.request_ids.discard(output.request_id)
        gone = []
        for client, own in by_client.items():
            try:
                send(client.outbox, StepOutputs(own, stats))
            except OSError:
                if client.is_owner:
                    raise  # the server is gone: the engine's loop ends
                gone.append(client)
        return gone

    def _accept_forever(self, listener: Listener, ready: EngineReady) -> None:
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError, AuthenticationError):  # a peer without the key, or one that left
                logger.warning("refused a connection to the engine that did not authenticate")
                continue
            try:
                send(connection, ready)
            except OSError:
                connection.close()
                continue
            with self._accept_lock:
                self._accepted.append(EngineClientEnd(connection, connection))
            os.write(self._wake_writer, b"\0")

    def _adopt_accepted(self) -> None:
        with self._accept_lock:
            accepted, self._accepted = self._accepted, []
        self._attached.extend(accepted)
