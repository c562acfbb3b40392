"""glibc's malloc settings for a server that moves large buffers: which blocks go back to the OS when freed,
and how much freed memory a heap keeps for reuse.

glibc serves an allocation of M_MMAP_THRESHOLD bytes or more with a mapping of its own, unmapped when freed.
By default the threshold moves: freeing such a block raises it to the block's size (up to 32 MiB), and from
then on blocks of that size come from the heaps of the allocating threads' arenas, which keep them when they
are freed. A server handling 10 MB bodies on several threads (the event loop, gRPC's threads, tokenization)
kept more of them with every request: under a minute of 10 MB prompts among other traffic, RSS grew by about
120 MB with nothing alive (benchmarks/soak.py). A fixed threshold stops that: blocks of LARGE_BLOCK_BYTES or
more are always mapped, and unmapped at free.

The threshold sits above 4 MiB because gRPC reads a busy connection in chunks of up to 4 MiB (its default
GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE), plus a header: at a 4 MiB threshold every such read mapped fresh memory,
faulted it in page by page and unmapped it. Fixing the threshold also fixes M_TRIM_THRESHOLD (how much free
memory at the top of a heap is kept rather than returned) at its 128 KiB default, so heaps shrank and grew
back around every request of a few hundred KB: KEPT_FREE_BYTES keeps that much. A ResNet-sized TorchScript
request (FP32 3x224x224 over gRPC, 16 perf_analyzer clients, dynamic batching, server on one core of a
2-core VM): 4 MiB and 128 KiB took 1,181-1,328 us of server CPU per request, 8 MiB and 16 MiB 918-987 us.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

LARGE_BLOCK_BYTES = 8 << 20
KEPT_FREE_BYTES = 16 << 20
# mallopt's parameter numbers (glibc's malloc.h), and the environment variables that set them instead
_SETTINGS = {"M_TRIM_THRESHOLD": (-1, "MALLOC_TRIM_THRESHOLD_"), "M_MMAP_THRESHOLD": (-3, "MALLOC_MMAP_THRESHOLD_")}


def return_large_blocks_to_the_os(
    threshold: int = LARGE_BLOCK_BYTES, kept_free: int = KEPT_FREE_BYTES
) -> dict[str, int]:
    """Fix glibc's mmap threshold at `threshold` bytes and its trim threshold at `kept_free` for this process;
    returns what was set (mallopt's name -> bytes).

    Nothing is changed off glibc, nor a setting that the environment makes (the operator's choice): an mmap
    threshold there keeps the trim threshold too, as glibc then keeps its own.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return {}
    libc = ctypes.CDLL(None)  # the C library this process runs on
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: other allocators, other knobs
        return {}
    wanted = {"M_MMAP_THRESHOLD": threshold, "M_TRIM_THRESHOLD": kept_free}
    return {name: value for name, value in wanted.items() if _mallopt(libc, name, value)}


def _mallopt(libc, name: str, value: int) -> bool:
    number, variable = _SETTINGS[name]
    if variable in os.environ:
        return False
    is_set = libc.mallopt(number, value) == 1
    if not is_set:
        logger.warning("mallopt(%s, %d) failed: glibc keeps its own setting", name, value)
    return is_set
