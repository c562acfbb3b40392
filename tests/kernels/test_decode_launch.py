"""Decode attention's launch: the default config by program count, and the split counters growing with the batch."""

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
from modelgate.kernels.split_counters import split_counters
from tests.kernels.attention_references import FP32_TOLERANCE, make_paged_cache
from tests.kernels.kernel_checks import relative_error

SMALL = DecodeConfig(block_n=16, num_warps=4, num_stages=1)


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
