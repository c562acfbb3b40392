"""Frames on a stream socket between the server and a stub: an 8-byte length, then that many bytes.

`send_frame` and `recv_frame` block (a stub's threads, the server's instance threads). `FrameReader` reads in
large chunks, so frames that arrived together cost one system call: `read_available` takes whatever has arrived
without waiting (the server's event loop, when the socket is readable), `next_frame` waits for one (the stub's
main thread, whose batches arrive several at a time).
"""

from __future__ import annotations

import collections
import select
import socket
import struct

_LENGTH = struct.Struct("<Q")
_CHUNK = 256 << 10  # one read; a frame larger than this is read into a buffer of its own size


def send_frame(sock: socket.socket, frame: bytes) -> None:
    """Send one frame (blocking until the kernel took it all); raises OSError when the peer is gone.

    Not atomic: threads that share a socket hold a lock around it."""
    header = _LENGTH.pack(len(frame))
    if len(frame) < _CHUNK:
        _send_all(sock, header + frame)  # one system call for the common small frame
    else:  # no concatenated copy of a large one
        _send_all(sock, header)
        _send_all(sock, frame)


def send_frames(sock: socket.socket, frames: list[bytes]) -> None:
    """Send `frames` in order, the small ones joined: several frames for one system call (and one wake-up of the
    reader) where `send_frame` would make one each. Raises OSError when the peer is gone."""
    small: list[bytes] = []
    for frame in frames:
        if len(frame) < _CHUNK:
            small += (_LENGTH.pack(len(frame)), frame)
            continue
        if small:
            _send_all(sock, b"".join(small))
            small = []
        send_frame(sock, frame)
    if small:
        _send_all(sock, b"".join(small))


def _send_all(sock: socket.socket, data: bytes) -> None:
    """`sock.sendall`, also where the descriptor is non-blocking: uvloop's `add_reader` (libuv's uv_poll_init)
    sets O_NONBLOCK on the server's end of a stub socket, and there a frame larger than the socket's buffer
    (a few hundred KiB) made `sendall` raise BlockingIOError midway, losing the request."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            _wait_writable(sock)
            continue
        view = view[sent:]


def _wait_writable(sock: socket.socket) -> None:
    poller = select.poll()  # not select.select: descriptors past FD_SETSIZE are common in a busy server
    poller.register(sock, select.POLLOUT)
    poller.poll()


def recv_frame(sock: socket.socket) -> bytearray:
    """The next frame (blocking); raises EOFError when the peer closed its end."""
    length = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))[0]
    return _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError
        received += count
    return buffer


class FrameReader:
    """Reads frames from a socket without ever waiting for one: for a caller that knows the socket is readable."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._pending = bytearray()  # received bytes not yet part of a returned frame (at most a partial header/frame)
        self._large: bytearray | None = None  # a large frame being filled in place
        self._large_filled = 0
        self._ready: collections.deque[bytearray] = collections.deque()  # complete, for next_frame
        # Reads land in this one buffer: `sock.recv(_CHUNK)` would allocate _CHUNK bytes per call, which glibc
        # serves by mmap and munmap past its threshold (~13 µs a read here, more than the read itself).
        self._chunk = memoryview(bytearray(_CHUNK))

    def next_frame(self) -> bytearray:
        """The next frame, waiting for it; raises EOFError when the peer closed. Not to be mixed with
        `read_available` on one reader."""
        while not self._ready:
            self._ready.extend(self._read(wait=True))
        return self._ready.popleft()

    def read_available(self) -> list[bytearray]:
        """Every frame completed by the bytes available now (maybe none); raises EOFError when the peer closed."""
        return self._read(wait=False)

    def _read(self, wait: bool) -> list[bytearray]:
        flags = 0 if wait else socket.MSG_DONTWAIT
        if self._large is not None:
            return self._fill_large(flags)
        try:
            count = self._sock.recv_into(self._chunk, _CHUNK, flags)
        except BlockingIOError:
            return []
        if not count:
            raise EOFError
        self._pending += self._chunk[:count]
        return self._split()

    def _split(self) -> list[bytearray]:
        frames = []
        start = 0
        pending = self._pending
        while len(pending) - start >= _LENGTH.size:
            length = _LENGTH.unpack_from(pending, start)[0]
            body = start + _LENGTH.size
            if len(pending) - body >= length:
                frames.append(pending[body : body + length])
                start = body + length
            elif length >= _CHUNK:  # read the rest straight into the frame's own buffer
                self._large = bytearray(length)
                got = len(pending) - body
                self._large[:got] = pending[body:]
                self._large_filled = got
                start = len(pending)
                break
            else:
                break
        del pending[:start]
        return frames

    def _fill_large(self, flags: int) -> list[bytearray]:
        try:
            count = self._sock.recv_into(memoryview(self._large)[self._large_filled :], 0, flags)
        except BlockingIOError:
            return []
        if count == 0:
            raise EOFError
        self._large_filled += count
        if self._large_filled < len(self._large):
            return []
        frame, self._large = self._large, None
        return [frame]
