"""The KV cache's share of what the engine may hold: blocks after the activation and graph peaks."""

import pytest

from modelgate.backends.llm.memory_budget import kv_blocks

GIB = 2**30


def test_blocks_fill_what_the_peaks_leave():
    assert kv_blocks(10 * GIB, 2 * GIB, GIB, bytes_per_block=2**20, block_size=16) == 7 * 1024


def test_no_room_for_one_block_is_an_error_that_says_what_to_change():
    with pytest.raises(ValueError, match="no GPU memory left for the KV cache.*raise gpu_memory_utilization") as raised:
        kv_blocks(3 * GIB, 2 * GIB, GIB, bytes_per_block=2**20, block_size=16)
    assert "of which CUDA graphs 1.0" in str(raised.value) and "cuda_graph_max_num_tokens" in str(raised.value)
