"""Decode attention's launch: the default config by program count; the grid order (DecodeConfig.heads_first:
a sequence's KV heads in consecutive programs give the same bits as the default order, in one pass and split,
where the split counters are indexed the same way); the split counters growing with the batch."""

import pytest
import torch

from modelgate.kernels.fp8_gemv import split_k_counters
from modelgate.kernels.paged_decode_attention import (
    COUNTER_OWNER,
    SINGLE_PASS,
    DecodeConfig,
    DecodeSplit,
    default_decode_config,
    paged_decode_attention,
    paged_decode_attention_reference,
    plan_decode_split,
)
from modelgate.kernels.reshape_and_cache import FP8_DTYPE
from modelgate.kernels.split_counters import split_counters
from tests.kernels.attention_references import FP32_TOLERANCE, make_paged_cache
from tests.kernels.kernel_checks import poisoned_outputs, relative_error

SMALL = DecodeConfig(block_n=16, num_warps=4, num_stages=1)


@pytest.mark.parametrize("split", [SINGLE_PASS, DecodeSplit(num_partitions=3, partition_size=32)])
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8_DTYPE])
def test_heads_first_gives_the_default_orders_bits(dev, split, cache_dtype):
    generator = torch.Generator().manual_seed(7)
    lens = [70, 1, 33, 0, 17]
    cache = make_paged_cache(lens, 16, 4, 64, cache_dtype, dev, generator)
    q = torch.randn((len(lens), 8, 64), generator=generator).to(dev, torch.bfloat16)
    outputs = []
    for heads_first in (False, True):
        with poisoned_outputs():
            outputs.append(
                paged_decode_attention(
                    q,
                    cache.kv_cache,
                    cache.block_tables,
                    cache.context_lens,
                    max(lens),
                    kv_scales=cache.kv_scales,
                    split=split,
                    config=SMALL._replace(heads_first=heads_first),
                )
            )
    assert torch.equal(outputs[0], outputs[1])
    assert outputs[0][3].abs().max() == 0  # the empty context


def test_default_config_narrows_tiles_for_many_programs():
    # Llama 3 8B heads on 132 SMs: batch 64 (512 programs) keeps 64-token tiles in 4 warps, batch 256 (2048
    # programs) takes 32-token tiles in 2 warps; head_dim 256 keeps 4 warps whatever the batch.
    assert default_decode_config(128, 64 * 8, 132)[:3] == (64, 4, 2)
    assert default_decode_config(128, 256 * 8, 132)[:3] == (32, 2, 2)
    assert default_decode_config(128, 132 * 8 - 1, 132)[:3] == (64, 4, 2)
    assert default_decode_config(256, 256 * 8, 132)[:3] == (32, 4, 2)
    assert default_decode_config(128).half_dots and default_decode_config(128, 4096).ptx_convert
    # Narrow tiles only where one pass is planned: the split's partitions stay whole tiles of either width.
    assert plan_decode_split(132, 8, 8192, 32, 132) == SINGLE_PASS


def test_split_counters_grow_and_stay_separate(dev):
    """More sequences than the decode counters hold grow them (outside capture); fp8_gemv keeps its own."""
    generator = torch.Generator().manual_seed(15)
    small = split_counters(COUNTER_OWNER, dev, 1)
    lens = [9] * (small.numel() + 1)
    cache = make_paged_cache(lens, 8, 1, 16, torch.float32, dev, generator)
    q = torch.randn((len(lens), 2, 16), generator=generator).to(dev)
    out = paged_decode_attention(
        q, cache.kv_cache, cache.block_tables, cache.context_lens, 9, split=DecodeSplit(2, 16), config=SMALL
    )
    grown = split_counters(COUNTER_OWNER, dev, 1)
    assert grown.numel() >= len(lens) and not grown.any()
    assert grown.data_ptr() != split_k_counters(dev).data_ptr()
    expected = paged_decode_attention_reference(q, cache.kv_cache, cache.block_tables, cache.context_lens)
    assert relative_error(out, expected) < FP32_TOLERANCE
