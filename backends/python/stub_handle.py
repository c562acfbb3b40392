"""The server's handle on one stub process: start it, send it frames, read its frames.

The stub is a fresh interpreter (`python -c`, exec'd at once: no fork of a process holding threads or CUDA):
the server's python, or the model's own (execution_env.py). It gets one end of two socket pairs:
- work: the server sends StubInit (or AutoComplete), Execute and Finalize, which the stub's main thread reads
  itself between executions (no thread hand-off per request); the stub sends every frame of its own;
- control: the server sends what must arrive while the model is busy (Cancel, BlsReturn, MetricReturn), read by
  a thread of the stub.

The server reads the stub's frames on its event loop where it lends one (no thread between the stub and the
request waiting for it), else on a thread of the handle. Every frame goes to `on_message`; when the stub's end
closes (it exited, crashed or was killed), `on_exit` is called once, on a thread of its own, with a sentence
saying how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from modelgate.backends.python.execution_env import StubInterpreter
from modelgate.backends.python.stub_frames import FrameReader, recv_frame, send_frame, send_frames
from modelgate.backends.python.stub_messages import (
    AutoComplete,
    AutoCompleted,
    BlsReturn,
    Cancel,
    FromStub,
    MetricReturn,
    StubFailed,
    StubInit,
    StubReady,
    ToStub,
    decode_from_stub,
    encode,
)

logger = logging.getLogger(__name__)

# argv: the work and control sockets' fds, then folders of the server's packages for a stub that runs in a model's
# own environment (execution_env.py). site.addsitedir puts them after the environment's own packages, so those win,
# and runs their .pth files, so an editable install of modelgate is found too.
_BOOTSTRAP = (
    "import site, sys\n"
    "for folder in sys.argv[3:]: site.addsitedir(folder)\n"
    "from modelgate.backends.python.stub_process import main; main(int(sys.argv[1]), int(sys.argv[2]))"
)

_CONTROL_FRAMES = (Cancel, BlsReturn, MetricReturn)


class StubStartError(RuntimeError):
    """The stub did not come up: the model's initialize failed, or the process died first."""


class StubHandle:
    def __init__(self, interpreter: StubInterpreter | None = None):
        """`interpreter`: the model's own python (EXECUTION_ENV_PATH, python_interpreter); None: the server's."""
        work, stub_work = socket.socketpair()
        control, stub_control = socket.socketpair()
        self.process = subprocess.Popen(
            _command(interpreter, stub_work.fileno(), stub_control.fileno()),
            pass_fds=[stub_work.fileno(), stub_control.fileno()],
            stdin=subprocess.DEVNULL,
        )
        stub_work.close()
        stub_control.close()
        self._work, self._control = work, control
        self._work_lock, self._control_lock = threading.Lock(), threading.Lock()
        self._unsent_work: list[bytes] = []  # frames queued on the loop, sent at the end of its iteration
        self._loop: asyncio.AbstractEventLoop | None = None  # where the stub's frames are read, when lent one
        self.shm_folder: Path | None = None  # set by the owner: large tensors of this stub (shm_tensors.py)

    def start_reading(
        self,
        on_message: Callable[[FromStub], None],
        on_exit: Callable[[str], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Hand every frame of the stub to `on_message`: on `loop` (from any other thread), else on a thread."""
        if loop is None:
            name = f"stub-{self.process.pid}"
            threading.Thread(target=self._read_forever, args=(on_message, on_exit), name=name, daemon=True).start()
            return
        self._loop = loop
        reader = FrameReader(self._work)
        loop.call_soon_threadsafe(loop.add_reader, self._work.fileno(), self._on_readable, reader, on_message, on_exit)

    def send(self, message: ToStub) -> None:
        """Raises OSError when the stub is gone."""
        frame = encode(message)
        if isinstance(message, _CONTROL_FRAMES):  # a Cancel may overtake its Execute: the stub keeps it for it
            with self._control_lock:
                send_frame(self._control, frame)
        else:
            self.send_work_frame(frame)

    def send_work_frame(self, frame: bytes, on_loop: bool = False) -> None:
        """An encoded frame for the work socket (Execute, Finalize); raises OSError when the stub is gone.

        `on_loop` (the caller runs on the loop that reads the stub): queued, and sent with every frame queued in
        the same iteration of the loop in one system call, when the loop has run the callbacks ready now. Requests
        come to the loop in bursts (gRPC's polling thread hands each one over as it arrives): add_sub over gRPC from
        16 clients sent one frame per request, 13% of the server's CPU in send(). Frames from other threads go out
        at once, after any queued ones."""
        with self._work_lock:
            if on_loop and self._loop is not None:
                if not self._unsent_work:
                    self._loop.call_soon(self._flush_on_loop)
                self._unsent_work.append(frame)
                return
            self._send_unsent_work()
            send_frame(self._work, frame)

    def flush_work(self) -> None:
        """Send the work frames queued on the loop now; raises OSError when the stub is gone."""
        with self._work_lock:
            self._send_unsent_work()

    def _flush_on_loop(self) -> None:
        try:
            self.flush_work()
        except OSError:
            pass  # the stub is gone: its reader fails the batches when it sees the stub's end

    def _send_unsent_work(self) -> None:
        if self._unsent_work:
            frames, self._unsent_work = self._unsent_work, []
            send_frames(self._work, frames)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def stop(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the process to end, then kill it; close the sockets."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._control.close()
        if self._loop is None:
            self._work.close()
            return
        try:  # the loop may still watch the socket: it stops watching, then closes it
            self._loop.call_soon_threadsafe(self._close_on_loop)
        except RuntimeError:  # that loop is closed
            self._work.close()

    def how_it_ended(self) -> str:
        code = self.process.wait()
        if code < 0:
            return f"its process was killed by {signal.Signals(-code).name}"
        return f"its process exited with code {code}"

    def receive(self, timeout_s: float) -> FromStub | None:
        """The next frame within `timeout_s`, or None; raises EOFError when the stub is gone."""
        readable, _, _ = select.select([self._work], [], [], timeout_s)
        if not readable:
            return None
        return decode_from_stub(recv_frame(self._work))

    def handshake(self, first: StubInit | AutoComplete, timeout_s: float) -> FromStub:
        """Send the first message and read its answer here (StubReady, AutoCompleted), or raise StubStartError.

        For a stub that sends nothing else first (AutoComplete); an instance's stub may call the server during
        initialize (BLS, metrics), so ProcessModelInstance reads its answer through `start_reading` instead.
        """
        try:
            self.send(first)
            reply = self.receive(timeout_s)
        except (EOFError, OSError):
            reply = None
        if isinstance(reply, (StubReady, AutoCompleted)):
            return reply
        self.kill()
        self.stop(5.0)
        if isinstance(reply, StubFailed):
            raise StubStartError(reply.message)
        if reply is None and self.process.returncode is not None:
            raise StubStartError(stopped_while_loading(self.how_it_ended()))
        raise StubStartError(f"the model's process did not answer within {timeout_s:g} s of starting")

    def _read_forever(self, on_message, on_exit) -> None:
        try:
            while True:
                on_message(decode_from_stub(recv_frame(self._work)))
        except (EOFError, OSError):
            pass
        except Exception:  # a frame we cannot read or handle: end this stub rather than guess
            logger.exception("stub %s: unreadable frame; stopping it", self.process.pid)
            self.kill()
        on_exit(self.how_it_ended())

    def _on_readable(self, reader: FrameReader, on_message, on_exit) -> None:
        """On the loop, when the work socket is readable: the frames that arrived, or the stub's end."""
        try:
            frames = reader.read_available()
        except (EOFError, OSError):
            self._loop.remove_reader(self._work.fileno())
            # Waiting for the process to be reaped must not hold the loop.
            threading.Thread(target=lambda: on_exit(self.how_it_ended()), daemon=True).start()
            return
        try:
            for frame in frames:
                on_message(decode_from_stub(frame))
        except Exception:  # as in _read_forever; the end of its socket follows
            logger.exception("stub %s: unreadable frame; stopping it", self.process.pid)
            self.kill()

    def _close_on_loop(self) -> None:
        if self._work.fileno() >= 0:
            self._loop.remove_reader(self._work.fileno())
            self._work.close()


def stopped_while_loading(how: str) -> str:
    return f"the model's process stopped while loading: {how}"


def _command(interpreter: StubInterpreter | None, work_fd: int, control_fd: int) -> list[str]:
    fds = [str(work_fd), str(control_fd)]
    if interpreter is None:
        return [sys.executable, "-c", _BOOTSTRAP, *fds]
    return [interpreter.executable, "-c", _BOOTSTRAP, *fds, *interpreter.site_dirs]
