"""rotary_reshape_and_cache (rotary fused into the KV write) against the two kernels it replaces and their
torch references, bit for bit: q, the cache (FP8 bytes included) and the scales; key is left unrotated."""

import pytest
import torch

from modelgate.kernels.reshape_and_cache import FP8_DTYPE, reshape_and_cache, reshape_and_cache_reference
from modelgate.kernels.rotary_embedding import rotary_embedding, rotary_embedding_reference
from modelgate.kernels.rotary_reshape_and_cache import rotary_reshape_and_cache, rotary_reshape_and_cache_reference
from tests.kernels.test_reshape_and_cache import assert_same_cache, random_cache
from tests.kernels.test_rotary_embedding import MAX_POSITIONS, caches, fused_qkv

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


class Step:
    """One layer's inputs of a step: q/k/v head views of a fused qkv output, positions, slots, a random cache."""

    def __init__(
        self,
        num_tokens,
        heads,
        dtype,
        cache_dtype,
        block_size,
        device,
        seed=0,
        num_blocks=7,
        max_positions=MAX_POSITIONS,
        padding=(),
        **rope,
    ):
        num_heads, num_kv_heads, head_dim = heads
        generator = torch.Generator().manual_seed(seed)
        self.q, self.k, self.v = fused_qkv(num_tokens, num_heads, num_kv_heads, head_dim, dtype, device, seed)
        self.cos, self.sin = caches(head_dim, device, max_positions, **rope)
        self.positions = torch.randint(0, max_positions, (num_tokens,), generator=generator).to(device)
        slots = torch.randperm(num_blocks * block_size, generator=generator)[:num_tokens]
        slots[list(padding)] = -1  # padded rows of a CUDA-graph batch
        self.slot_mapping = slots.to(device)
        self.kv_cache, self.kv_scales = random_cache(
            num_blocks, block_size, num_kv_heads, head_dim, cache_dtype, device, generator
        )

    def copy(self) -> "Step":
        twin = object.__new__(Step)
        twin.__dict__.update(self.__dict__)
        qkv = torch.cat([self.q.flatten(1), self.k.flatten(1), self.v.flatten(1)], dim=1)  # a fresh fused buffer
        q, k, v = qkv.split([self.q[0].numel(), self.k[0].numel(), self.v[0].numel()], dim=1)
        twin.q, twin.k, twin.v = q.view(self.q.shape), k.view(self.k.shape), v.view(self.v.shape)
        twin.kv_cache = self.kv_cache.clone()
        twin.kv_scales = None if self.kv_scales is None else self.kv_scales.clone()
        return twin

    def fused(self, launch=rotary_reshape_and_cache) -> None:
        launch(
            self.q, self.k, self.v, self.kv_cache, self.slot_mapping, self.positions, self.cos, self.sin, self.kv_scales
        )

    def unfused_kernels(self) -> None:
        rotary_embedding(self.q, self.k, self.positions, self.cos, self.sin)
        reshape_and_cache(self.k, self.v, self.kv_cache, self.slot_mapping, self.kv_scales)

    def unfused_references(self) -> None:
        q, k = rotary_embedding_reference(self.q, self.k, self.positions, self.cos, self.sin)
        self.q.copy_(q)
        self.k.copy_(k)
        reshape_and_cache_reference(self.k, self.v, self.kv_cache, self.slot_mapping, self.kv_scales)


def assert_same_bytes(actual: Step, expected: Step) -> None:
    """Bit for bit, +0/-0 and FP8 bytes included."""
    assert torch.equal(actual.q.contiguous().view(torch.uint8), expected.q.contiguous().view(torch.uint8))
    assert torch.equal(actual.kv_cache.view(torch.uint8), expected.kv_cache.view(torch.uint8))
    if actual.kv_scales is not None:
        assert torch.equal(actual.kv_scales, expected.kv_scales)


def check_fused_equals_unfused(step: Step, compare_references: bool = True) -> None:
    kernels, references = step.copy(), step.copy()
    key_before, value_before = step.k.clone(), step.v.clone()
    step.fused()
    kernels.unfused_kernels()
    assert_same_bytes(step, kernels)
    assert torch.equal(step.k, key_before) and torch.equal(step.v, value_before)  # key is not rotated in place
    if compare_references:
        references.unfused_references()
        assert torch.equal(step.q, references.q)
        assert_same_cache(step.kv_cache, references.kv_cache, step.kv_scales, references.kv_scales)


@pytest.mark.parametrize(
    "dtype, cache_dtype",
    [
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.float32, torch.float32),
        (torch.bfloat16, FP8_DTYPE),
        (torch.float32, FP8_DTYPE),
    ],
)
@pytest.mark.parametrize(
    "heads, block_size",  # (Hq, Hkv, head_dim): GQA groups of 2, 3 and 1 (MQA); 24, 40: non-power-of-two halves
    [((4, 2, 16), 16), ((3, 1, 24), 8), ((6, 2, 40), 16), ((2, 2, 8), 8)],
)
def test_fused_equals_rotary_then_reshape_and_cache(dev, heads, block_size, dtype, cache_dtype):
    step = Step(9, heads, dtype, cache_dtype, block_size, dev, seed=1, padding=(2, 5))
    check_fused_equals_unfused(step)


def test_wider_source_into_a_narrower_cache(dev):
    """fp32 q/k/v into a bf16 cache: the same cast as reshape_and_cache's (which the interpreter truncates)."""
    check_fused_equals_unfused(
        Step(5, (4, 2, 16), torch.float32, torch.bfloat16, 8, dev, seed=2), compare_references=False
    )


def test_llama3_scaled_rope_and_single_token_decode(dev):
    step = Step(1, (4, 2, 16), torch.bfloat16, FP8_DTYPE, 16, dev, seed=3, max_positions=300, **LLAMA3_ROPE)
    check_fused_equals_unfused(step)


def test_all_rows_padding_rotates_q_and_writes_nothing(dev):
    step = Step(3, (4, 2, 16), torch.bfloat16, FP8_DTYPE, 8, dev, seed=4, padding=(0, 1, 2))
    cache_before, scales_before = step.kv_cache.clone(), step.kv_scales.clone()
    expected_q, _ = rotary_embedding_reference(step.q, step.k, step.positions, step.cos, step.sin)
    step.fused()
    assert torch.equal(step.q, expected_q)
    assert torch.equal(step.kv_cache.view(torch.uint8), cache_before.view(torch.uint8))
    assert torch.equal(step.kv_scales, scales_before)


def test_reference_composes_the_two_references(dev):
    step = Step(6, (3, 1, 24), torch.bfloat16, FP8_DTYPE, 8, dev, seed=5, padding=(4,))
    references = step.copy()
    step.fused(launch=rotary_reshape_and_cache_reference)
    references.unfused_references()
    assert_same_bytes(step, references)


def test_zero_tokens_leave_the_cache_and_its_scales(dev):
    step = Step(0, (4, 2, 16), torch.bfloat16, FP8_DTYPE, 8, dev)
    cache_before, scales_before = step.kv_cache.clone(), step.kv_scales.clone()
    step.fused()
    assert torch.equal(step.kv_cache.view(torch.uint8), cache_before.view(torch.uint8))  # FP8 bytes untouched
    assert torch.equal(step.kv_scales, scales_before)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(q=lambda s: s.q[..., :15]), "q's head_dim must be even"),
        (dict(k=lambda s: s.k[..., :8]), "k must be"),
        (dict(positions=lambda s: s.positions.int()), "positions must be int64"),
        (dict(cos=lambda s: s.cos[:, :4]), "cos must be float32"),
        (dict(v=lambda s: s.v[:, :1]), "key and value"),
        (dict(slot_mapping=lambda s: s.slot_mapping[:2]), "slot_mapping must be int64"),
        (dict(kv_scales=lambda s: None), "an FP8 kv_cache needs kv_scales"),
    ],
)
def test_bad_arguments_name_the_field(dev, change, message):
    step = Step(3, (4, 2, 16), torch.bfloat16, FP8_DTYPE, 8, dev)
    for name, make in change.items():
        setattr(step, name, make(step))
    with pytest.raises(ValueError, match=f"rotary_reshape_and_cache: {message}"):
        step.fused()


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8_DTYPE])
@pytest.mark.parametrize("num_tokens", [1, 64, 4096])
def test_llama_8b_shapes_on_gpu(cuda, num_tokens, cache_dtype):
    """32 query / 8 KV heads of 128 from a fused qkv output, bf16, Llama 3.1 rope, an 8k-block cache, padding."""
    padding = range(num_tokens - min(100, num_tokens // 2), num_tokens)
    step = Step(
        num_tokens,
        (32, 8, 128),
        torch.bfloat16,
        cache_dtype,
        16,
        cuda,
        seed=6,
        num_blocks=8192,
        max_positions=8192,
        padding=padding,
        **LLAMA3_ROPE,
    )
    check_fused_equals_unfused(step)
