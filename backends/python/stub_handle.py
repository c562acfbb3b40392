"""The server's handle on one stub process: start it, send it frames, read its frames on a thread.

The stub is a fresh interpreter (`python -c`, exec'd at once: no fork of a process holding threads or CUDA)
given one end of a socket pair: the server's python, or the model's own (execution_env.py). The handle's reader
thread hands every frame to `on_message` and, when the
stub's end closes (it exited, crashed or was killed), calls `on_exit` once with a sentence saying how it ended.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from modelgate.backends.python.execution_env import StubInterpreter
from modelgate.backends.python.stub_messages import (
    AutoComplete,
    AutoCompleted,
    FromStub,
    StubFailed,
    StubInit,
    StubReady,
    ToStub,
    decode_from_stub,
    encode,
)

logger = logging.getLogger(__name__)

# argv: the socket's fd, then folders of the server's packages for a stub that runs in a model's own environment
# (execution_env.py). site.addsitedir puts them after the environment's own packages, so those win, and runs their
# .pth files, so an editable install of modelgate is found too.
_BOOTSTRAP = (
    "import site, sys\n"
    "for folder in sys.argv[2:]: site.addsitedir(folder)\n"
    "from modelgate.backends.python.stub_process import main; main(int(sys.argv[1]))"
)


class StubStartError(RuntimeError):
    """The stub did not come up: the model's initialize failed, or the process died first."""


class StubHandle:
    def __init__(self, interpreter: StubInterpreter | None = None):
        """`interpreter`: the model's own python (EXECUTION_ENV_PATH, python_interpreter); None: the server's."""
        server_end, stub_end = socket.socketpair()
        self.process = subprocess.Popen(
            _command(interpreter, stub_end.fileno()),
            pass_fds=[stub_end.fileno()],
            stdin=subprocess.DEVNULL,
        )
        stub_end.close()
        self._connection = Connection(server_end.detach())
        self._send_lock = threading.Lock()
        self.shm_folder: Path | None = None  # set by the owner: large tensors of this stub (shm_tensors.py)

    def start_reading(self, on_message: Callable[[FromStub], None], on_exit: Callable[[str], None]) -> None:
        thread = threading.Thread(
            target=self._read_forever, args=(on_message, on_exit), name=f"stub-{self.process.pid}", daemon=True
        )
        thread.start()

    def send(self, message: ToStub) -> None:
        """Raises OSError when the stub is gone."""
        frame = encode(message)
        with self._send_lock:
            self._connection.send_bytes(frame)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def stop(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the process to end, then kill it; close the socket."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._connection.close()

    def how_it_ended(self) -> str:
        code = self.process.wait()
        if code < 0:
            return f"its process was killed by {signal.Signals(-code).name}"
        return f"its process exited with code {code}"

    def receive(self, timeout_s: float) -> FromStub | None:
        """The next frame within `timeout_s`, or None; raises EOFError when the stub is gone."""
        if not self._connection.poll(timeout_s):
            return None
        return decode_from_stub(self._connection.recv_bytes())

    def handshake(self, first: StubInit | AutoComplete, timeout_s: float) -> FromStub:
        """Send the first message and read its answer here (StubReady, AutoCompleted), or raise StubStartError.

        For a stub that sends nothing else first (AutoComplete); an instance's stub may call the server during
        initialize (BLS, metrics), so ProcessModelInstance reads its answer on the reader thread instead.
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
                on_message(decode_from_stub(self._connection.recv_bytes()))
        except (EOFError, OSError):
            pass
        except Exception:  # a frame we cannot read or handle: end this stub rather than guess
            logger.exception("stub %s: unreadable frame; stopping it", self.process.pid)
            self.kill()
        on_exit(self.how_it_ended())


def stopped_while_loading(how: str) -> str:
    return f"the model's process stopped while loading: {how}"


def _command(interpreter: StubInterpreter | None, fd: int) -> list[str]:
    if interpreter is None:
        return [sys.executable, "-c", _BOOTSTRAP, str(fd)]
    return [interpreter.executable, "-c", _BOOTSTRAP, str(fd), *interpreter.site_dirs]
