"""Frames between the server and a stub: whole frames out of whatever the socket delivered, never a wait."""

import fcntl
import os
import socket
import struct
import threading

import pytest

from modelgate.backends.python.stub_frames import FrameReader, recv_frame, send_frame, send_frames


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def _drain(reader: FrameReader, count: int) -> list[bytes]:
    frames = []
    while len(frames) < count:
        frames.extend(bytes(f) for f in reader.read_available())
    return frames


def test_many_small_frames_arriving_together_come_out_one_by_one(pair):
    left, right = pair
    sent = [b"", b"a", b"bc" * 100, bytes(range(256))]
    for frame in sent:
        send_frame(left, frame)
    assert _drain(FrameReader(right), len(sent)) == sent


def test_frames_sent_together_small_and_large_arrive_in_order(pair):
    left, right = pair
    large = bytes(range(256)) * 4096  # 1 MiB: sent on its own, between the joined small ones
    sent = [b"a", b"", b"bc" * 10, large, b"after", b"last"]
    writer = threading.Thread(target=send_frames, args=(left, sent))
    writer.start()
    received = [bytes(recv_frame(right)) for _ in sent]
    writer.join()
    assert received == sent


def test_a_frame_split_anywhere_waits_for_its_rest(pair):
    left, right = pair
    payload = b"0123456789"
    wire = struct.pack("<Q", len(payload)) + payload
    reader = FrameReader(right)
    for piece in (wire[:3], wire[3:8], wire[8:12]):  # inside the length, up to its end, inside the body
        left.sendall(piece)
        assert reader.read_available() == []
    left.sendall(wire[12:])
    assert _drain(reader, 1) == [payload]


def test_a_frame_larger_than_one_read_is_filled_in_place(pair):
    left, right = pair
    large = bytes(range(256)) * 8192  # 2 MiB: several reads
    writer = threading.Thread(target=lambda: (send_frame(left, large), send_frame(left, b"next")))
    writer.start()
    frames = _drain(FrameReader(right), 2)
    writer.join()
    assert frames == [large, b"next"]


def test_nothing_arrived_is_no_frame_and_no_wait(pair):
    _, right = pair
    assert FrameReader(right).read_available() == []


def test_the_peer_closing_is_eof_for_both_readers(pair):
    left, right = pair
    send_frame(left, b"last")
    left.close()
    reader = FrameReader(right)
    assert _drain(reader, 1) == [b"last"]
    with pytest.raises(EOFError):
        reader.read_available()


def test_blocking_receive_reads_exactly_one_frame(pair):
    left, right = pair
    send_frame(left, b"one")
    send_frame(left, b"two")
    assert recv_frame(right) == b"one"
    assert recv_frame(right) == b"two"
    left.close()
    with pytest.raises(EOFError):
        recv_frame(right)


def test_waiting_reader_returns_frames_that_came_together_one_at_a_time(pair):
    left, right = pair
    large = bytes(range(256)) * 4096  # 1 MiB: its own buffer, filled while waiting

    def write_then_close():
        for frame in (b"a", large, b"b"):
            send_frame(left, frame)
        left.close()

    writer = threading.Thread(target=write_then_close)
    writer.start()
    reader = FrameReader(right)
    assert [bytes(reader.next_frame()) for _ in range(3)] == [b"a", large, b"b"]
    writer.join()
    with pytest.raises(EOFError):
        reader.next_frame()


def test_a_large_frame_goes_whole_through_a_non_blocking_socket(pair):
    # uvloop's add_reader leaves the server's end of a stub socket non-blocking: a frame larger than the socket
    # buffer must still go out whole while the peer reads it in its own time.
    left, right = pair
    fcntl.fcntl(left.fileno(), fcntl.F_SETFL, fcntl.fcntl(left.fileno(), fcntl.F_GETFL) | os.O_NONBLOCK)
    frame = bytes(range(256)) * (8 << 10)  # 2 MiB, far beyond a socketpair's buffer
    received = []
    reader = threading.Thread(target=lambda: received.append(bytes(recv_frame(right))))
    reader.start()
    send_frame(left, frame)
    reader.join(timeout=30)
    assert received == [frame]
