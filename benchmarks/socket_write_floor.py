"""The kernel's floor under a streamed token: the CPU one small write to a loopback TCP socket costs the writer.

A server that streams one event per token per connection pays at least one such write per token, whatever its
own code does: on the 2-core VM of session 21 it was 7-11 µs by itself, most of the server's system time per
token. A child process holds `num_streams` connections open and reads them; this process writes `event_bytes`
to each in turn, `num_steps` times with a pause between (an engine step), and takes its own thread's CPU.

    python benchmarks/socket_write_floor.py [--streams 64] [--event-bytes 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import time


def _read_all(address: tuple[str, int], num_streams: int) -> None:
    connections = [socket.create_connection(address) for _ in range(num_streams)]
    selector = selectors.DefaultSelector()
    for connection in connections:
        selector.register(connection, selectors.EVENT_READ)
    remaining = num_streams
    while remaining:
        for key, _ in selector.select():
            if not key.fileobj.recv(1 << 16):
                selector.unregister(key.fileobj)
                remaining -= 1


def write_floor_us(num_streams: int = 64, event_bytes: int = 200, num_steps: int = 200, pause_s: float = 0.01) -> float:
    """CPU µs of this thread per write of `event_bytes` to one of `num_streams` loopback TCP connections."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=num_streams)
    reader = multiprocessing.get_context("fork").Process(
        target=_read_all, args=(listener.getsockname(), num_streams), daemon=True
    )
    reader.start()
    connections = [listener.accept()[0] for _ in range(num_streams)]
    for connection in connections:  # as aiohttp's connections: every write goes out at once
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event = b"x" * event_bytes
    cpu = 0.0
    for _ in range(num_steps):
        started = time.thread_time()
        for connection in connections:
            connection.sendall(event)
        cpu += time.thread_time() - started
        time.sleep(pause_s)
    for connection in connections:
        connection.close()
    listener.close()
    reader.join(10)
    return cpu / (num_steps * num_streams) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--event-bytes", type=int, default=200)
    args = parser.parse_args()
    print(f"one {args.event_bytes}-byte write to one of {args.streams} loopback TCP connections: ", end="")
    print(f"{write_floor_us(args.streams, args.event_bytes):.1f} µs of the writer's CPU")


if __name__ == "__main__":
    main()
