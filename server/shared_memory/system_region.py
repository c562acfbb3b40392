"""A system shared-memory region: part of a POSIX shared-memory object that a client created and registered.

The key is a POSIX shared-memory name (`/name`, as `shm_open` takes it). It is opened only inside the shared-memory
file system, never as a path: a key holding another `/`, or naming a link or anything but a regular file, is
refused, so a client cannot make the server open a file of its choosing.

Tensors are copied in and out with pread/pwrite on the object rather than through a mapping: a client that shrinks
the object after registering it would turn a read of a mapping into SIGBUS and kill the server; a short read is an
error for that request alone. The one copy is what gRPC and HTTP bodies cost too, without the wire.
"""

from __future__ import annotations

import os
import stat
import weakref

import numpy as np

from modelgate.core.errors import InvalidArgumentError

SHM_DIRECTORY = "/dev/shm"
MAX_KEY_LENGTH = 255


class SystemRegion:
    """`byte_size` bytes at `offset` of the object `key`, open for reading and writing until the region is freed
    (an unregistered region still in use by a request stays open until that request lets go of it)."""

    def __init__(self, name: str, key: str, offset: int, byte_size: int, descriptor: int):
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        self._descriptor = descriptor
        weakref.finalize(self, os.close, descriptor)

    def status(self) -> dict:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def read(self, start: int, size: int, where: str) -> np.ndarray:
        """A new uint8 array of `size` bytes from `start` within the region (bounds checked by the caller)."""
        data = np.empty(size, dtype=np.uint8)
        if size and os.preadv(self._descriptor, [data], self.offset + start) != size:
            raise InvalidArgumentError(
                f"{where}: shared memory region '{self.name}' is shorter than registered (its object was truncated)"
            )
        return data

    def write(self, start: int, data, where: str) -> None:
        """Write `data` (a memoryview of bytes, or a uint8 CUDA tensor) at `start` within the region; refuses when
        the object no longer holds the range."""
        if not isinstance(data, memoryview):
            data = memoryview(data.cpu().numpy())
        end = self.offset + start + data.nbytes
        if os.fstat(self._descriptor).st_size < end:
            raise InvalidArgumentError(
                f"{where}: shared memory region '{self.name}' is shorter than registered (its object was truncated)"
            )
        written = os.pwrite(self._descriptor, data, self.offset + start)
        if written != data.nbytes:
            raise InvalidArgumentError(f"{where}: wrote {written} of {data.nbytes} bytes to region '{self.name}'")


def open_system_region(name: str, key: str, offset: int, byte_size: int) -> SystemRegion:
    """Open `byte_size` bytes at `offset` of the shared-memory object `key`; InvalidArgumentError says what is
    wrong (no such object, a range past its end, a key that is not a shared-memory name)."""
    file_name = _file_name(key)
    if offset < 0 or byte_size < 0:
        raise InvalidArgumentError(
            f"shared memory region '{name}': offset ({offset}) and byte_size ({byte_size}) must be >= 0"
        )
    descriptor = _open_in_shm(file_name, key, name)
    size = os.fstat(descriptor).st_size
    if offset + byte_size > size:
        os.close(descriptor)
        raise InvalidArgumentError(
            f"shared memory region '{name}': offset {offset} + byte_size {byte_size} runs past the end of "
            f"'{key}' ({size} bytes)"
        )
    return SystemRegion(name, key, offset, byte_size, descriptor)


def _file_name(key: str) -> str:
    file_name = key[1:] if key.startswith("/") else key
    if not file_name or "/" in file_name or file_name in (".", "..") or "\0" in file_name:
        raise InvalidArgumentError(
            f"shared memory key '{key}' is not a POSIX shared-memory name; it must be '/name' with no other '/'"
        )
    if len(file_name) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(f"shared memory key is {len(file_name)} characters; at most {MAX_KEY_LENGTH}")
    return file_name


def _open_in_shm(file_name: str, key: str, name: str) -> int:
    directory = os.open(SHM_DIRECTORY, os.O_RDONLY | os.O_DIRECTORY)
    try:
        descriptor = os.open(file_name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError as exc:
        raise InvalidArgumentError(
            f"unable to open shared memory region '{name}': key '{key}': {exc.strerror}"
        ) from None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise InvalidArgumentError(f"shared memory key '{key}' is not a shared-memory object")
    return descriptor
