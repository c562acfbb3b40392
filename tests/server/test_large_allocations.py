"""return_large_blocks_to_the_os: on glibc (where `modelgate serve` runs it) blocks of LARGE_BLOCK_BYTES and more
are mapped and unmapped, smaller ones come from the heap, and freed heap memory up to KEPT_FREE_BYTES stays for
reuse; a setting the environment makes is left to the operator."""

import json
import os
import platform
import subprocess
import sys

import pytest

from modelgate.server.large_allocations import KEPT_FREE_BYTES, LARGE_BLOCK_BYTES, return_large_blocks_to_the_os

on_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)


# Run in a fresh interpreter: the test process's heaps hold whatever earlier tests left, which moves the block
# that a free returns to the top of the heap (or not).
_SCENARIO = """
import ctypes, json
from modelgate.server.large_allocations import LARGE_BLOCK_BYTES, return_large_blocks_to_the_os

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
applied = return_large_blocks_to_the_os()
mapped = [libc.mallinfo2().hblks]
large = libc.malloc(LARGE_BLOCK_BYTES + (1 << 20))
mapped.append(libc.mallinfo2().hblks)
medium = libc.malloc(LARGE_BLOCK_BYTES // 2)  # a 4 MiB gRPC read chunk's size
mapped.append(libc.mallinfo2().hblks)
libc.free(medium)
kept = libc.mallinfo2().keepcost
libc.free(large)
mapped.append(libc.mallinfo2().hblks)
print(json.dumps({"applied": applied, "mapped": mapped, "kept": kept}))
"""


@on_glibc
def test_large_blocks_are_mapped_smaller_ones_come_from_the_heap_and_freed_memory_is_kept():
    environment = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    finished = subprocess.run(
        [sys.executable, "-c", _SCENARIO], capture_output=True, text=True, env=environment, check=True, timeout=60
    )
    seen = json.loads(finished.stdout)
    assert seen["applied"] == {"M_MMAP_THRESHOLD": LARGE_BLOCK_BYTES, "M_TRIM_THRESHOLD": KEPT_FREE_BYTES}
    before = seen["mapped"][0]
    # The large block is mapped (and unmapped at free); the 4 MiB one comes from the heap.
    assert seen["mapped"] == [before, before + 1, before + 1, before]
    # Freed, the 4 MiB block sits at the top of the heap: kept for the next one (glibc's default would trim it).
    assert seen["kept"] >= LARGE_BLOCK_BYTES // 2


def test_settings_in_the_environment_are_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert return_large_blocks_to_the_os() == {}
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
        assert return_large_blocks_to_the_os() == {"M_MMAP_THRESHOLD": LARGE_BLOCK_BYTES}
