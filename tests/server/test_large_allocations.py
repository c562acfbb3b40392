"""return_large_blocks_to_the_os: on glibc (where `modelgate serve` runs it) blocks of LARGE_BLOCK_BYTES and more
are mapped and unmapped, smaller ones come from the heap, and freed heap memory up to KEPT_FREE_BYTES stays for
reuse; a setting the environment makes is left to the operator."""

import ctypes
import platform

import pytest

from modelgate.server.large_allocations import KEPT_FREE_BYTES, LARGE_BLOCK_BYTES, return_large_blocks_to_the_os

on_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _libc():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = _MallInfo2
    return libc


@on_glibc
def test_large_blocks_are_mapped_smaller_ones_come_from_the_heap_and_freed_memory_is_kept(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert return_large_blocks_to_the_os() == {
        "M_MMAP_THRESHOLD": LARGE_BLOCK_BYTES,
        "M_TRIM_THRESHOLD": KEPT_FREE_BYTES,
    }
    libc = _libc()
    mapped_before = libc.mallinfo2().hblks
    large = libc.malloc(LARGE_BLOCK_BYTES + (1 << 20))
    assert libc.mallinfo2().hblks == mapped_before + 1
    medium = libc.malloc(LARGE_BLOCK_BYTES // 2)  # a 4 MiB gRPC read chunk's size: from the heap, not mapped
    assert libc.mallinfo2().hblks == mapped_before + 1
    libc.free(medium)
    # The freed block sits at the top of the heap: kept for the next one (glibc's default would trim it).
    assert libc.mallinfo2().keepcost >= LARGE_BLOCK_BYTES // 2
    libc.free(large)
    assert libc.mallinfo2().hblks == mapped_before


def test_settings_in_the_environment_are_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_large_blocks_to_the_os() == {}
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
        assert return_large_blocks_to_the_os() == {"M_MMAP_THRESHOLD": LARGE_BLOCK_BYTES}
