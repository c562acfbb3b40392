"""return_large_blocks_to_the_os: set on glibc (where `modelgate serve` runs it), left to the operator where the
environment already sets MALLOC_MMAP_THRESHOLD_."""

import platform

import pytest

from modelgate.server.large_allocations import LARGE_BLOCK_BYTES, return_large_blocks_to_the_os

on_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)


@on_glibc
def test_the_threshold_is_set_on_glibc(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert return_large_blocks_to_the_os(LARGE_BLOCK_BYTES)


def test_an_operator_threshold_in_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert not return_large_blocks_to_the_os(LARGE_BLOCK_BYTES)
