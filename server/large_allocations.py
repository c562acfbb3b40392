"""Memory of large request buffers goes back to the operating system when they are freed (glibc).

glibc serves an allocation of M_MMAP_THRESHOLD bytes or more with a mapping of its own, unmapped when freed.
By default the threshold moves: freeing such a block raises it to the block's size (up to 32 MiB), and from
then on blocks of that size come from the heaps of the allocating threads' arenas, which keep them when they
are freed. A server handling 10 MB bodies on several threads (the event loop, gRPC's threads, tokenization)
kept more of them with every request: under a minute of 10 MB prompts among other traffic, RSS grew by about
120 MB with nothing alive (benchmarks/soak.py). A fixed threshold stops that: blocks of LARGE_BLOCK_BYTES or
more are always mapped, and unmapped at free, for one mmap/munmap pair and the page faults of first use per
block, small next to receiving and decoding that many bytes. Smaller blocks are served as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

LARGE_BLOCK_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def return_large_blocks_to_the_os(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process; whether it was set.

    Nothing is changed off glibc, nor where the environment sets MALLOC_MMAP_THRESHOLD_ (the operator's choice).
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = ctypes.CDLL(None)  # the C library this process runs on
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: other allocators, other knobs
        return False
    is_set = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    if not is_set:
        logger.warning("mallopt(M_MMAP_THRESHOLD, %d) failed: large buffers may stay in the heap", threshold)
    return is_set
