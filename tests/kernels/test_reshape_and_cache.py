"""reshape_and_cache: the KV write (and FP8 quantization) against its torch reference, bit for bit."""

import pytest
import torch

from modelgate.kernels.reshape_and_cache import (
    FP8_DTYPE,
    FP8_MAX,
    MIN_SCALE,
    allocate_kv_cache,
    reshape_and_cache,
    reshape_and_cache_reference,
)
from tests.kernels.attention_references import on_device, random_fp8_bits, random_kv
from tests.kernels.kernel_checks import assert_fp8_within_ulps


def random_cache(num_blocks, block_size, num_kv_heads, head_dim, dtype, device, generator):
    """A cache of random garbage, so that a write to the wrong place or a missing write shows."""
    kv_cache, kv_scales = allocate_kv_cache(num_blocks, block_size, num_kv_heads, head_dim, dtype, device)
    drawing = on_device(generator, device)
    if dtype == FP8_DTYPE:
        kv_cache.copy_(random_fp8_bits(kv_cache.shape, generator, device))
        kv_scales.uniform_(0.5, 1.5, generator=drawing)
    else:
        kv_cache.normal_(generator=drawing)
    return kv_cache, kv_scales


def assert_same_cache(actual, expected, actual_scales, expected_scales):
    if actual.dtype == FP8_DTYPE:
        assert_fp8_within_ulps(actual, expected, ulps=0)
        assert torch.equal(actual_scales, expected_scales)
    else:
        assert torch.equal(actual, expected)


@pytest.mark.parametrize(
    "dtype, block_size, num_kv_heads, head_dim",
    [
        (torch.float32, 16, 2, 64),
        (torch.bfloat16, 16, 1, 64),
        (torch.float16, 8, 3, 40),
        (FP8_DTYPE, 16, 2, 64),
        (FP8_DTYPE, 8, 3, 40),
    ],
)
def test_write_matches_reference_bit_for_bit(dev, dtype, block_size, num_kv_heads, head_dim):
    generator = torch.Generator().manual_seed(1)
    num_blocks, num_tokens = 7, 9
    kv_cache, kv_scales = random_cache(num_blocks, block_size, num_kv_heads, head_dim, dtype, dev, generator)
    expected, expected_scales = kv_cache.clone(), None if kv_scales is None else kv_scales.clone()
    source_dtype = torch.bfloat16 if dtype == FP8_DTYPE else dtype
    # K and V as slices of one fused QKV output: strided tokens, contiguous head_dim.
    fused = random_kv((num_tokens, 3 * num_kv_heads, head_dim), generator, dev, source_dtype)
    key, value = fused[:, num_kv_heads : 2 * num_kv_heads], fused[:, 2 * num_kv_heads :]
    slots = torch.randperm(num_blocks * block_size, generator=generator)[:num_tokens]
    slots[[2, 5]] = torch.tensor([-1, -7])  # padded rows of a CUDA-graph batch
    slot_mapping = slots.to(dev)
    reshape_and_cache(key, value, kv_cache, slot_mapping, kv_scales)
    reshape_and_cache_reference(key, value, expected, slot_mapping, expected_scales)
    assert_same_cache(kv_cache, expected, kv_scales, expected_scales)


def test_wider_source_is_rounded_within_one_ulp(dev):
    """fp32 K/V into a bf16 cache: the GPU rounds to nearest even (exact); the interpreter truncates (<= 1 ULP)."""
    generator = torch.Generator().manual_seed(2)
    kv_cache, _ = random_cache(4, 16, 2, 64, torch.bfloat16, dev, generator)
    expected = kv_cache.clone()
    key, value = (random_kv((5, 2, 64), generator, dev) for _ in range(2))
    slot_mapping = torch.tensor([0, 17, 63, 3, 40], device=dev)
    reshape_and_cache(key, value, kv_cache, slot_mapping)
    reshape_and_cache_reference(key, value, expected, slot_mapping)
    relative = (kv_cache.float() - expected.float()).abs() / expected.float().abs().clamp_min(1e-30)
    assert relative.max().item() <= 2.0**-7


def test_fp8_roundtrip_is_accurate(dev):
    """Per-(token, head) scales: each element within half an e4m3 step of its value, whatever the token's size."""
    generator = torch.Generator().manual_seed(3)
    kv_cache, kv_scales = allocate_kv_cache(4, 16, 2, 64, FP8_DTYPE, dev)
    key = random_kv((20, 2, 64), generator, dev)
    key[3] *= 1000.0  # an outlier token does not cost the others any precision
    value = random_kv((20, 2, 64), generator, dev)
    slot_mapping = torch.arange(20, device=dev) * 3
    reshape_and_cache(key, value, kv_cache, slot_mapping, kv_scales)
    for index, x in enumerate((key, value)):
        stored = kv_cache[index].view(-1, 2, 64)[slot_mapping].float()
        scales = kv_scales[index].view(-1, 2)[slot_mapping]
        assert torch.allclose(scales, x.abs().amax(-1) / FP8_MAX, rtol=1e-6)
        error = (stored * scales[..., None] - x).abs()
        # Normals: 3 mantissa bits -> half a step is 2^-4 relative; subnormals: half of 2^-9 * scale.
        bound = torch.maximum(x.abs() * 2.0**-4, scales[..., None] * 2.0**-10)
        assert (error <= bound * (1 + 1e-6)).all()


def test_fp8_every_e4m3_value_and_tie_rounds_like_torch(dev):
    """All finite e4m3 values and the midpoints between neighbours (ties to even), scale fixed at 1 by a 448."""
    grid = torch.arange(0, 0x7F, dtype=torch.uint8).view(FP8_DTYPE).float()  # 0 .. 448
    midpoints = (grid[1:] + grid[:-1]) / 2
    numbers = torch.cat([grid, midpoints, -grid, -midpoints, grid[1:-1] * 1.0001, midpoints * 0.9999])
    per_token = 63  # + one 448 each: every token's scale is exactly 1
    numbers = torch.cat([numbers, numbers.new_zeros(-len(numbers) % per_token)]).view(-1, per_token)
    key = torch.cat([numbers, numbers.new_full((numbers.shape[0], 1), FP8_MAX)], dim=1)[:, None, :].to(dev)
    num_tokens = key.shape[0]
    kv_cache, kv_scales = allocate_kv_cache(num_tokens, 1, 1, 64, FP8_DTYPE, dev)
    expected, expected_scales = kv_cache.clone(), kv_scales.clone()
    slot_mapping = torch.arange(num_tokens, device=dev)
    reshape_and_cache(key, -key, kv_cache, slot_mapping, kv_scales)
    reshape_and_cache_reference(key, -key, expected, slot_mapping, expected_scales)
    assert torch.equal(kv_scales, torch.ones_like(kv_scales))
    assert_same_cache(kv_cache, expected, kv_scales, expected_scales)


def test_zero_heads_get_the_minimum_scale_and_padding_writes_nothing(dev):
    kv_cache, kv_scales = allocate_kv_cache(2, 8, 2, 64, FP8_DTYPE, dev)
    kv_cache.view(torch.uint8).fill_(0x38)  # 1.0
    kv_scales.fill_(3.0)
    key = torch.zeros((3, 2, 64), device=dev)
    reshape_and_cache(key, key, kv_cache, torch.tensor([5, -1, -1], device=dev), kv_scales)
    assert torch.equal(kv_scales[:, 0, 5], torch.full((2, 2), MIN_SCALE, device=dev))
    assert (kv_cache[:, 0, 5].float() == 0).all()
    untouched = torch.ones(kv_cache.shape, dtype=torch.bool, device=dev)
    untouched[:, 0, 5] = False
    assert (kv_cache.float()[untouched] == 1.0).all()
    assert (kv_scales[untouched[..., 0]] == 3.0).all()
    reshape_and_cache(key[:0], key[:0], kv_cache, torch.empty(0, dtype=torch.int64, device=dev), kv_scales)


def _arguments(dev, **changes):
    kv_cache, kv_scales = allocate_kv_cache(2, 8, 2, 64, FP8_DTYPE, dev)
    arguments = dict(
        key=torch.zeros((3, 2, 64), device=dev),
        value=torch.zeros((3, 2, 64), device=dev),
        kv_cache=kv_cache,
        slot_mapping=torch.arange(3, device=dev),
        kv_scales=kv_scales,
    )
    arguments.update({name: make(arguments) for name, make in changes.items()})
    return arguments


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(value=lambda a: a["value"][:, :1]), "key and value"),
        (dict(key=lambda a: a["key"].to(torch.int32)), "bfloat16, float16 or float32"),
        (dict(slot_mapping=lambda a: a["slot_mapping"].to(torch.int32)), "slot_mapping must be int64"),
        (dict(slot_mapping=lambda a: a["slot_mapping"][:2]), "slot_mapping must be int64"),
        (dict(kv_scales=lambda a: None), "needs kv_scales"),
        (dict(kv_scales=lambda a: a["kv_scales"][:, :1]), "kv_scales must be float32"),
        (dict(kv_cache=lambda a: a["kv_cache"][:, :, :, :1]), "KV heads"),
        (dict(kv_cache=lambda a: a["kv_cache"][0]), "kv_cache must be [2,"),
        (dict(kv_cache=lambda a: a["kv_cache"].view(torch.uint8)), "kv_cache must be bfloat16"),
        (dict(key=lambda a: a["key"].transpose(1, 2).contiguous().transpose(1, 2)), "contiguous head_dim"),
        (
            dict(kv_cache=lambda a: torch.zeros(a["kv_cache"].shape, dtype=torch.bfloat16, device=a["key"].device)),
            "kv_scales given",
        ),
    ],
)
def test_launcher_refuses_bad_arguments(dev, changes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        reshape_and_cache(**_arguments(dev, **changes))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, FP8_DTYPE])
def test_realistic_write_on_gpu(cuda, dtype):
    """A 4096-token prefill step (with padding) of 8 KV heads x 128 into an 8k-block cache."""
    generator = torch.Generator().manual_seed(4)
    num_blocks, block_size, num_tokens = 8192, 16, 4096
    kv_cache, kv_scales = random_cache(num_blocks, block_size, 8, 128, dtype, cuda, generator)
    expected, expected_scales = kv_cache.clone(), None if kv_scales is None else kv_scales.clone()
    fused = random_kv((num_tokens, 48, 128), generator, cuda, torch.bfloat16)
    key, value = fused[:, 32:40], fused[:, 40:]
    slots = torch.randperm(num_blocks * block_size, generator=generator)[:num_tokens]
    slots[-100:] = -1
    slot_mapping = slots.to(cuda)
    reshape_and_cache(key, value, kv_cache, slot_mapping, kv_scales)
    reshape_and_cache_reference(key, value, expected, slot_mapping, expected_scales)
    assert_same_cache(kv_cache, expected, kv_scales, expected_scales)
