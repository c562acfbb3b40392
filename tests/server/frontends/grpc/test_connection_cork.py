"""A connection the loop sends on twice in one iteration is corked until the iteration ends, through a duplicate of
its socket that leaves grpc's own descriptor as it was and closes with the peer's last stream."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
import socket
import time

import grpc
import pytest

from modelgate.server.frontends.grpc.connection_cork import ConnectionCorks, _peer_address
from modelgate.server.frontends.grpc.loop_calls import LoopCalls
from tests.server.frontends.grpc.grpc_helpers import WAIT_S
from tests.server.frontends.grpc.probe_service import loop_on_a_thread, probe_server, stream


@pytest.fixture
def connection():
    """(the server's end, non-blocking as grpc's, its peer as grpc names it, the client's end)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    served.setblocking(False)
    host, port = client.getsockname()
    yield served, f"ipv4:{host}:{port}".encode(), client
    for each in (served, client, listener):
        each.close()


def _is_corked(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))


async def _next_iteration() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def _found(corks: ConnectionCorks, peer: bytes) -> ConnectionCorks:
    """After an iteration that sent `peer` two messages: once the search (on a thread) has found its socket."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not corks.is_found(peer) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return corks


async def _corks_that_found(peer: bytes) -> ConnectionCorks:
    corks = ConnectionCorks(asyncio.get_running_loop())
    corks.open(peer)
    corks.before_send(peer)
    corks.before_send(peer)
    return await _found(corks, peer)


def test_a_second_send_in_one_iteration_corks_the_connection_and_the_iteration_end_releases_it(connection):
    served, peer, client = connection

    async def scenario():
        corks = ConnectionCorks(asyncio.get_running_loop())
        corks.open(peer)
        corks.before_send(peer)
        corks.before_send(peer)
        not_before_found = not _is_corked(served)  # the search runs on a thread: this iteration goes uncorked
        await _found(corks, peer)
        corks.before_send(peer)
        first_alone = _is_corked(served)
        corks.before_send(peer)
        corked_then = _is_corked(served) and corks.is_corked(peer)
        served.send(b"held")
        await _next_iteration()
        released = not _is_corked(served) and not corks.is_corked(peer)
        corks.before_send(peer)  # the next iteration starts anew: its first send goes alone
        alone_again = not _is_corked(served)
        corks.close(peer)
        return not_before_found, first_alone, corked_then, released, alone_again

    not_before_found, first_alone, corked_then, released, alone_again = asyncio.run(scenario())
    assert not_before_found and not first_alone and corked_then and released and alone_again
    client.settimeout(5)
    assert client.recv(16) == b"held"


def test_grpcs_socket_stays_non_blocking_and_open_when_the_peers_last_stream_ends(connection):
    served, peer, client = connection

    async def scenario():
        descriptors_before = len(os.listdir("/proc/self/fd"))
        corks = await _corks_that_found(peer)
        corks.open(peer)
        await _next_iteration()
        corks.before_send(peer)
        corks.before_send(peer)
        corks.close(peer)
        still_held = len(os.listdir("/proc/self/fd")) == descriptors_before + 1  # the duplicate, for the other stream
        corks.close(peer)
        return still_held, len(os.listdir("/proc/self/fd")) == descriptors_before

    still_held, all_closed = asyncio.run(scenario())
    assert still_held and all_closed
    assert fcntl.fcntl(served.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
    assert not _is_corked(served)  # closed while corked: released first
    served.send(b"still open")
    client.settimeout(5)
    assert client.recv(16) == b"still open"


def test_a_peer_with_no_tcp_socket_or_no_open_stream_is_never_corked(connection):
    served, peer, _ = connection

    async def scenario():
        corks = ConnectionCorks(asyncio.get_running_loop())
        unix = b"unix:/tmp/modelgate.sock"
        corks.open(unix)
        for _ in range(2):  # a second iteration: after any search
            for sent_to in (unix, unix, peer, peer):  # `peer` has no stream opened
                corks.before_send(sent_to)
            await asyncio.sleep(0.1)  # time for the searches, which find nothing (a test that passes either way)
        return corks.is_corked(unix) or corks.is_corked(peer) or _is_corked(served)

    assert not asyncio.run(scenario())


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        (b"ipv4:127.0.0.1:5000", ("127.0.0.1", 5000)),
        (b"ipv6:[::1]:5001", ("::1", 5001)),
        (b"ipv6:%5B::1%5D:5002", ("::1", 5002)),
        (b"unix:/tmp/socket", None),
        (b"ipv4:nonsense", None),
    ],
)
def test_peers_are_read_as_grpc_writes_them(peer, address):
    assert _peer_address(peer) == address


def test_a_loop_stream_finds_grpcs_own_socket_and_corks_it_while_it_sends_twice_in_one_iteration():
    """Through grpcio's threaded server and a real client: the peer grpc names is found among this process's
    sockets (a grpcio that named peers otherwise would silently stop corking), and every response arrives."""
    seen: list[bool] = []
    requests = [b"%d" % number for number in range(20)]

    async def twice(requests, context):
        async for request in requests:
            writer = context.response_writer
            writer.write(request + b"-1")
            writer.write(request + b"-2")  # the second send of this iteration on the connection: corked once found
            seen.append(any(corks.is_corked(peer) for peer in list(corks._num_streams)))
        yield b"end"

    def never_threaded(request_iterator, context):
        raise AssertionError("a LoopCalls stream ran on a thread")

    def paced():
        for request in requests:  # one per loop iteration, with time for the search between the first two
            yield request
            time.sleep(0.02)

    with loop_on_a_thread() as (loop, _):
        fallback = concurrent.futures.ThreadPoolExecutor(1)
        calls = LoopCalls(loop, fallback)
        corks = calls._corks
        behaviour = calls.stream_handler(never_threaded, twice, bytes, bytes)
        handlers = {"Twice": grpc.stream_stream_rpc_method_handler(behaviour)}
        with probe_server(handlers, 1) as (_, channel):
            responses = list(stream(channel, "Twice")(paced(), timeout=WAIT_S))
        fallback.shutdown(wait=False)
    assert responses == [response for request in requests for response in (request + b"-1", request + b"-2")] + [b"end"]
    assert not seen[0] and any(seen)  # the first iteration goes uncorked: the search runs on a thread
    assert not corks._sockets  # the stream ended: its duplicate socket is closed
