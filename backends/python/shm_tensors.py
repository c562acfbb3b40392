"""Large tensors between the server and a stub through shared memory instead of inside the frames.

The server makes one folder in /dev/shm per stub and tells the stub its path. A tensor of at least
SHM_MIN_BYTES (fixed-size types) is written once into a new file there and only the file's name travels in the
frame; the receiver maps the file (no copy: the array is a view of the mapping, private copy-on-write where it
must be writable), then unlinks it, so the memory goes back once the array is gone. Names are checked to be
plain file names inside the folder: a frame never makes the other side open a path of its choosing. The server
removes the folder, and whatever is left in it, when the stub stops.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

# Below this the per-file costs (create, map, page faults, unlink) outweigh the copies saved
# (benchmarks/python_stub_tensors.py: slower at 1 and 16 MiB, 1.7x faster at 64 MiB on a 2-core VM).
SHM_MIN_BYTES = 32 << 20
_SHM_ROOT = Path("/dev/shm")


def make_folder() -> Path | None:
    """A new private folder in /dev/shm, or None where there is none (tensors then travel inside the frames)."""
    if not _SHM_ROOT.is_dir():
        return None
    return Path(tempfile.mkdtemp(prefix="modelgate-stub-", dir=_SHM_ROOT))


def remove_folder(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def is_large(array: np.ndarray) -> bool:
    return array.dtype != object and array.nbytes >= SHM_MIN_BYTES


def write(folder: Path, array: np.ndarray) -> str:
    """Write the array's bytes into a new file of `folder`; its name."""
    handle, path = tempfile.mkstemp(dir=folder, suffix=".tensor")
    try:
        os.ftruncate(handle, array.nbytes)
        with mmap.mmap(handle, array.nbytes) as mapping:
            np.frombuffer(mapping, dtype=np.uint8)[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    finally:
        os.close(handle)
    return os.path.basename(path)


def read(folder: Path, name: str, nbytes: int, writable: bool) -> memoryview:
    """The bytes of file `name` in `folder`, mapped (copy-on-write if `writable`); the file is unlinked."""
    if os.path.basename(name) != name or not name.endswith(".tensor"):
        raise ValueError(f"shared-memory tensor name {name!r} is not a file of this stub's folder")
    path = folder / name
    handle = os.open(path, os.O_RDONLY if not writable else os.O_RDWR)
    try:
        os.unlink(path)
        if os.fstat(handle).st_size != nbytes:
            raise ValueError(f"shared-memory tensor {name!r} holds {os.fstat(handle).st_size} bytes, not {nbytes}")
        access = mmap.ACCESS_COPY if writable else mmap.ACCESS_READ
        return memoryview(mmap.mmap(handle, nbytes, access=access))
    finally:
        os.close(handle)
