"""Several messages that the loop sends on one gRPC connection in one loop iteration leave in one TCP write.

An LLM's engine step gives every stream one token at once, and clients multiplex their streams over one HTTP/2
connection (tritonclient, genai-perf, perf_analyzer: one channel). grpc core writes each message to the socket
as its send starts (loop_stream.py), so a step of 64 streams cost 64 loopback TCP transmissions, most of a
streamed token's kernel time. While the loop sends a second message on a connection in the same iteration, its
socket is corked (TCP_CORK): the kernel then only queues what grpc writes, and the cork, released when the
iteration ends (a callback the loop runs next), sends it all at once. The bytes on the wire are the same; a
message waits at most for the rest of the loop's iteration (the kernel also sends corked data after 200 ms).
A bare server streaming a token's message to 64 streams of one connection (benchmarks/grpc_stream_floor.py)
went from 11.2-16.0 µs of CPU per message to 9.2-9.8 on the 2-core VM, and tiny_llm streaming over gRPC from
26.9-30.1 µs of server CPU per token to 21.2-24.0 (benchmarks/results/llm_server_cpu_per_token.log, session 24).

grpc does not expose its sockets: the connection's is found by its peer address among this process's file
descriptors (Linux's /proc/self/fd) and duplicated, so that it stays the same socket whatever grpc closes or
opens meanwhile. That search runs once per connection, on a thread (it reads every descriptor: the loop must not
wait for it), from the first iteration that sends the connection two messages; the connection is corked from
the first iteration after it is found (one whose messages go one per iteration is never searched for nor corked).
The duplicate is closed when the last stream of that peer ends (a connection outlives its streams), so it never
keeps a connection open. Where no TCP socket has that address (a Unix socket, another OS), or where the process
has more than MAX_DESCRIPTORS open, nothing is corked.
"""

from __future__ import annotations

import asyncio
import os
import socket
from urllib.parse import unquote

_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# Past this many open descriptors a search costs more than corking saves (each descriptor is asked what it is).
MAX_DESCRIPTORS = 4096


class ConnectionCorks:
    """The corks of one event loop's gRPC connections. Every method runs on that loop.

    A stream calls `open(peer)` when it starts and `close(peer)` when it ends (`peer`: its call's peer, as grpc
    gives it), and `before_send(peer)` before each message the loop starts sending on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._num_streams: dict[bytes, int] = {}  # peer -> its open streams
        # peer -> its connection's socket; None: searched for (on a thread, not done yet) or not found
        self._sockets: dict[bytes, socket.socket | None] = {}
        self._sent_to: set[bytes] = set()  # the peers the loop sent to in this iteration
        self._corked: list[socket.socket] = []

    def open(self, peer: bytes) -> None:
        self._num_streams[peer] = self._num_streams.get(peer, 0) + 1

    def close(self, peer: bytes) -> None:
        remaining = self._num_streams.get(peer, 0) - 1
        if remaining > 0:
            self._num_streams[peer] = remaining
            return
        self._num_streams.pop(peer, None)
        connection = self._sockets.pop(peer, None)
        if connection is not None:
            if connection in self._corked:
                self._release_one(connection)
                self._corked.remove(connection)
            connection.close()

    def before_send(self, peer: bytes) -> None:
        sent_to = self._sent_to
        if peer not in sent_to:  # nearly always the first message of the iteration on its connection: sent alone
            if not sent_to:
                self._loop.call_soon(self._release)
            sent_to.add(peer)
            return
        if peer not in self._sockets:
            self._sockets[peer] = None  # not corked until found
            if peer in self._num_streams:
                try:
                    search = self._loop.run_in_executor(None, _find_connection, peer)
                except RuntimeError:  # the loop's executor is shut down: the server is stopping
                    return
                search.add_done_callback(lambda done: self._found(peer, done))
            return
        connection = self._sockets[peer]
        if connection is not None and connection not in self._corked:
            try:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            except OSError:  # the connection is gone: its messages fail in grpc as they would have
                self._sockets[peer] = None
                return
            self._corked.append(connection)

    def _found(self, peer: bytes, search: asyncio.Future) -> None:
        connection = None if search.cancelled() or search.exception() is not None else search.result()
        if connection is None:
            return
        if peer in self._num_streams and self._sockets.get(peer) is None:
            self._sockets[peer] = connection
        else:  # the peer's streams ended meanwhile (or another search found it first)
            connection.close()

    def is_found(self, peer: bytes) -> bool:
        """Whether `peer`'s connection was found, to be corked (for tests)."""
        return self._sockets.get(peer) is not None

    def is_corked(self, peer: bytes) -> bool:
        """Whether `peer`'s connection is corked now (for tests)."""
        connection = self._sockets.get(peer)
        return connection is not None and connection in self._corked

    def _release(self) -> None:
        """At the end of the loop's iteration: every corked connection sends what it holds."""
        self._sent_to.clear()
        corked, self._corked = self._corked, []
        for connection in corked:
            self._release_one(connection)

    @staticmethod
    def _release_one(connection: socket.socket) -> None:
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        except OSError:  # closed by the peer meanwhile: nothing waits to be sent
            pass


def _find_connection(peer: bytes) -> socket.socket | None:
    """A duplicate of this process's TCP socket connected to `peer` (grpc's "ipv4:host:port" or "ipv6:[host]:port"),
    or None."""
    address = _peer_address(peer)
    if address is None:
        return None
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:  # not Linux
        return None
    if len(descriptors) > MAX_DESCRIPTORS:
        return None
    for name in descriptors:
        try:
            view = socket.socket(fileno=int(name))  # owns nothing until detached: never closes grpc's descriptor
        except (OSError, ValueError):  # not a socket, or closed meanwhile
            continue
        try:
            if _is_connected_to(view, address):
                # os.dup, not socket.dup: that sets the duplicate's timeout, which would make grpc's socket (the
                # same open file) blocking.
                duplicate = socket.socket(fileno=os.dup(view.fileno()))
                if _is_connected_to(duplicate, address):  # the descriptor was not reused between the two
                    return duplicate
                duplicate.close()
        except OSError:
            pass
        finally:
            view.detach()
    return None


def _peer_address(peer: bytes) -> tuple[str, int] | None:
    text = unquote(peer.decode("ascii", "replace"))
    scheme, _, rest = text.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _is_connected_to(candidate: socket.socket, address: tuple[str, int]) -> bool:
    if candidate.family not in _IP_FAMILIES or candidate.type != socket.SOCK_STREAM:
        return False
    host, port = candidate.getpeername()[:2]
    return port == address[1] and host in (address[0], "::ffff:" + address[0])
