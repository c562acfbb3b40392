"""Decode attention that rotates q and attends and writes the step's own K/V itself (FreshToken) against the two
launches it replaces, rotary_reshape_and_cache then paged_decode_attention: the same cache bytes and scales,
and the same output within the attention tolerances (the fresh key's score sums in another order)."""

import pytest
import torch

from kernels.decode_fresh_token import FreshToken
from kernels.paged_decode_attention import SINGLE_PASS, DecodeConfig, DecodeSplit, paged_decode_attention
from kernels.reshape_and_cache import FP8_DTYPE
from kernels.rotary_reshape_and_cache import rotary_reshape_and_cache
from tests.kernels.attention_references import BF16_TOLERANCE, FP32_TOLERANCE, make_paged_cache
from tests.kernels.kernel_checks import poisoned_outputs, relative_error
from tests.kernels.test_rotary_embedding import caches, fused_qkv

SMALL = DecodeConfig(block_n=16, num_warps=4, num_stages=1)


class DecodeStep:
    """One layer of a decode step: a random paged cache holding each sequence's context but its last token
    (those slots hold stale random K/V), and that token's unrotated q, k, v as head views of one qkv output."""

    def __init__(self, dev, lens, heads, cache_dtype, block_size=8, seed=0, padded=()):
        num_heads, num_kv_heads, head_dim = heads
        generator = torch.Generator().manual_seed(seed)
        self.cache = make_paged_cache(lens, block_size, num_kv_heads, head_dim, cache_dtype, dev, generator)
        dtype = torch.bfloat16 if cache_dtype == FP8_DTYPE else cache_dtype
        self.q, self.k, self.v = fused_qkv(len(lens), num_heads, num_kv_heads, head_dim, dtype, dev, seed)
        self.cos, self.sin = caches(head_dim, dev, max_positions=max(lens) + 1)
        positions, slots = [], []
        tables = self.cache.block_tables.cpu()
        for index, length in enumerate(lens):
            position = max(length - 1, 0)
            positions.append(position)
            slot = int(tables[index, position // block_size]) * block_size + position % block_size
            slots.append(-1 if index in padded else slot)
        self.positions = torch.tensor(positions, device=dev)
        self.slot_mapping = torch.tensor(slots, device=dev)
        self.max_len = max(lens)

    def fresh(self) -> FreshToken:
        return FreshToken(self.k, self.v, self.slot_mapping, self.positions, self.cos, self.sin)

    def caches(self):
        scales = None if self.cache.kv_scales is None else self.cache.kv_scales.clone()
        return self.cache.kv_cache.clone(), scales

    def attend(self, q, kv_cache, kv_scales, split, fresh=None, window=None):
        with poisoned_outputs():
            return paged_decode_attention(q, kv_cache, self.cache.block_tables, self.cache.context_lens, self.max_len,
                                          kv_scales=kv_scales, split=split, config=SMALL, fresh=fresh,
                                          sliding_window=window)

    def fused(self, split, window=None):
        kv_cache, kv_scales = self.caches()
        q_before = self.q.clone()
        out = self.attend(self.q, kv_cache, kv_scales, split, self.fresh(), window)
        assert torch.equal(self.q, q_before), "q itself is not rotated"
        return out, kv_cache, kv_scales

    def unfused(self, split, window=None):
        kv_cache, kv_scales = self.caches()
        q = self.q.clone()
        rotary_reshape_and_cache(q, self.k, self.v, kv_cache, self.slot_mapping, self.positions, self.cos, self.sin,
                                 kv_scales)
        return self.attend(q, kv_cache, kv_scales, split, window=window), kv_cache, kv_scales


def assert_same_step(fused, unfused) -> None:
    """Cache and scales bit for bit; outputs within the stated attention tolerance of their dtype."""
    (out, kv_cache, kv_scales), (expected_out, expected_cache, expected_scales) = fused, unfused
    assert torch.equal(kv_cache.view(torch.uint8), expected_cache.view(torch.uint8))
    if kv_scales is not None:
        assert torch.equal(kv_scales, expected_scales)
    assert not out.isnan().any()
    assert relative_error(out, expected_out) < (FP32_TOLERANCE if out.dtype == torch.float32 else BF16_TOLERANCE)


@pytest.mark.parametrize("cache_dtype, head_dim", [
    (torch.bfloat16, 32),
    (torch.float32, 16),
    (FP8_DTYPE, 64),  # read as int32 words (kernels/fp8_kv_words.py): q is rotated quarter by quarter
    (FP8_DTYPE, 32),  # read as bytes
])
@pytest.mark.parametrize("split", [SINGLE_PASS, DecodeSplit(3, 32)], ids=["single", "split"])
def test_fresh_token_equals_rotary_kv_write_then_attention(dev, cache_dtype, head_dim, split):
    step = DecodeStep(dev, [70, 20, 1, 33], (4, 2, head_dim), cache_dtype)
    fused = step.fused(split)
    assert_same_step(fused, step.unfused(split))
    # The fresh K/V really went into the cache (the stale random row there before differs).
    assert not torch.equal(fused[1].view(torch.uint8), step.cache.kv_cache.view(torch.uint8))


def test_fresh_token_with_padded_rows_and_a_window(dev):
    """A CUDA graph's padded rows (context 0, slot -1) write nothing and give zeros; a sliding window still sees
    the fresh token; three query heads per KV head."""
    step = DecodeStep(dev, [40, 0, 9], (6, 2, 32), torch.bfloat16, padded=(1,), seed=3)
    fused = step.fused(DecodeSplit(4, 16), window=12)
    assert_same_step(fused, step.unfused(DecodeSplit(4, 16), window=12))
    assert not fused[0][1].any()


def test_fresh_token_slot_minus_one_writes_nothing(dev):
    """A row with a context but slot -1 (a dummy step) writes nothing, and still attends its own token."""
    written = DecodeStep(dev, [24, 17], (4, 2, 32), FP8_DTYPE, seed=5)
    step = DecodeStep(dev, [24, 17], (4, 2, 32), FP8_DTYPE, padded=(0, 1), seed=5)
    out, kv_cache, kv_scales = step.fused(SINGLE_PASS)
    assert torch.equal(kv_cache.view(torch.uint8), step.cache.kv_cache.view(torch.uint8))
    assert torch.equal(kv_scales, step.cache.kv_scales)
    assert torch.equal(out, written.fused(SINGLE_PASS)[0])


def test_fresh_token_is_attended_from_registers_not_from_the_stale_slot(dev):
    """The fresh key and value count once, as their rotated (FP8-rounded) selves: poisoning the slot's stale
    contents (the kernel must not read them) changes nothing, and an unrelated key value changes the output."""
    step = DecodeStep(dev, [33], (4, 2, 64), FP8_DTYPE, seed=9)
    slot = int(step.slot_mapping[0])
    block, offset = divmod(slot, step.cache.block_size)
    clean = step.fused(DecodeSplit(3, 32))[0]
    step.cache.kv_cache[:, block, offset] = torch.tensor(float("nan")).to(FP8_DTYPE)
    assert torch.equal(step.fused(DecodeSplit(3, 32))[0], clean)
    step.v.mul_(2.0)
    assert not torch.equal(step.fused(DecodeSplit(3, 32))[0], clean)


@pytest.mark.parametrize("field, bad, message", [
    ("positions", lambda s: s.positions.to(torch.int32), "positions"),
    ("slot_mapping", lambda s: s.slot_mapping[:1], "slot_mapping"),
    ("key", lambda s: s.k[:, :1], "kv"),
    ("cos", lambda s: s.cos[:, :3], "cos"),
])
def test_fresh_token_arguments_are_checked(dev, field, bad, message):
    step = DecodeStep(dev, [9, 5], (4, 2, 16), torch.float32)
    fresh = step.fresh()._replace(**{field: bad(step)})
    kv_cache, kv_scales = step.caches()
    with pytest.raises(ValueError, match=message):
        step.attend(step.q, kv_cache, kv_scales, SINGLE_PASS, fresh)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8_DTYPE])
def test_fresh_token_at_llama_shapes_on_the_gpu(cuda, cache_dtype):
    """Llama-3-8B heads at batch 1 and 64, compiled (mul-add contraction on in the attention kernel): the cache
    bits of the two unfused launches, their output within tolerance."""
    for lens in ([1024], [300 + 11 * i for i in range(64)]):
        step = DecodeStep(cuda, lens, (32, 8, 128), cache_dtype, block_size=16, seed=len(lens))
        split = DecodeSplit(16, 64)
        assert_same_step(step.fused(split), step.unfused(split))
