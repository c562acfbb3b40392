"""In-place rotary embedding on strided q/k views against rotary.py's math.

Tolerance: none. The kernel computes x1 * c - x2 * s and x2 * c + x1 * s in float32 with the same roundings
as torch's separate ops (no FMA contraction) and rounds once to the input dtype, so it equals the reference
bit for bit.
"""

import pytest
import torch

import modelgate.kernels.rotary_embedding as rotary_module
from modelgate.backends.llm.models.model_config import DecoderConfig
from modelgate.backends.llm.models.rotary import RotaryEmbedding
from modelgate.kernels.rotary_embedding import rotary_embedding, rotary_embedding_reference

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
MAX_POSITIONS = 64


def config(num_heads, num_kv_heads, head_dim, **rope) -> DecoderConfig:
    return DecoderConfig(
        architecture="LlamaForCausalLM",
        vocab_size=32,
        hidden_size=num_heads * head_dim,
        intermediate_size=64,
        num_layers=1,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=rope,
    )


def caches(head_dim, device, max_positions=MAX_POSITIONS, **rope):
    """cos, sin [max_positions, head_dim // 2] float32 exactly as RotaryEmbedding builds them."""
    rotary = RotaryEmbedding(config(1, 1, head_dim, **rope), max_positions, use_kernel=False)
    return rotary.cos.to(device), rotary.sin.to(device)


def fused_qkv(num_tokens, num_heads, num_kv_heads, head_dim, dtype, device, seed=0):
    """q, k, v as the model gets them: head views of one [num_tokens, (Hq + 2 Hkv) * D] projection output."""
    generator = torch.Generator().manual_seed(seed)
    width = (num_heads + 2 * num_kv_heads) * head_dim
    qkv = (torch.randn(num_tokens, width, generator=generator) * 3).to(device, dtype)
    q, k, v = qkv.split([num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], -1)
    heads = (num_heads, num_kv_heads, num_kv_heads)
    return tuple(t.view(num_tokens, count, head_dim) for t, count in zip((q, k, v), heads))


def positions_for(num_tokens, device, seed=0):
    return torch.randint(0, MAX_POSITIONS, (num_tokens,), generator=torch.Generator().manual_seed(seed)).to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens", [1, 3, 7, 40])
@pytest.mark.parametrize("heads", [(4, 2, 16), (3, 1, 24)])  # (Hq, Hkv, head_dim); 24: a non-power-of-two half
def test_strided_views_match_reference(heads, num_tokens, dtype, dev):
    num_heads, num_kv_heads, head_dim = heads
    q, k, v = fused_qkv(num_tokens, num_heads, num_kv_heads, head_dim, dtype, dev)
    assert not q.is_contiguous() or num_tokens == 1
    cos, sin = caches(head_dim, dev)
    positions = positions_for(num_tokens, dev)
    expected_q, expected_k = rotary_embedding_reference(q, k, positions, cos, sin)
    v_before = v.clone()
    rotary_embedding(q, k, positions, cos, sin)
    assert torch.equal(q, expected_q) and torch.equal(k, expected_k)
    assert torch.equal(v, v_before)  # the rest of the qkv rows is untouched


def test_equals_the_model_rotary_with_llama3_scaling(dev):
    # RotaryEmbedding with and without the kernel: in place on the views, or new tensors from _rotate.
    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    with torch.device(dev):
        kernel = RotaryEmbedding(config(4, 2, 16, **rope), MAX_POSITIONS)
        reference = RotaryEmbedding(config(4, 2, 16, **rope), MAX_POSITIONS, use_kernel=False)
    assert kernel.kernel is not None and reference.kernel is None
    q, k, _ = fused_qkv(9, 4, 2, 16, torch.bfloat16, dev, seed=1)
    positions = positions_for(9, dev, seed=1)
    expected_q, expected_k = reference(positions, q, k)
    got_q, got_k = kernel(positions, q, k)
    assert got_q is q and got_k is k  # rotated in place
    assert torch.equal(got_q, expected_q) and torch.equal(got_k, expected_k)


def test_one_token_per_program(monkeypatch, dev):
    monkeypatch.setattr(rotary_module, "TILE_ELEMENTS", 1)
    q, k, _ = fused_qkv(5, 4, 2, 16, torch.bfloat16, dev, seed=2)
    cos, sin = caches(16, dev)
    positions = positions_for(5, dev, seed=2)
    expected_q, expected_k = rotary_embedding_reference(q, k, positions, cos, sin)
    rotary_embedding(q, k, positions, cos, sin)
    assert torch.equal(q, expected_q) and torch.equal(k, expected_k)


def test_zero_tokens_write_nothing(dev):
    """Zero-token views at the start of a filled qkv buffer (a step with nothing to rotate): no row changes."""
    q, k, v = fused_qkv(5, 4, 2, 16, torch.bfloat16, dev)
    before = [t.clone() for t in (q, k, v)]
    cos, sin = caches(16, dev)
    rotary_embedding(q[:0], k[:0], positions_for(0, dev), cos, sin)
    assert all(torch.equal(t, b) for t, b in zip((q, k, v), before))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, k, p, c, s: (q[..., :15], k[..., :15], p, c, s), "q's head_dim must be even"),
        (lambda q, k, p, c, s: (q, k[..., :8], p, c, s), "k must be"),
        (lambda q, k, p, c, s: (q.to(torch.int32), k, p, c, s), "q must be bfloat16"),
        (lambda q, k, p, c, s: (q.transpose(1, 2).contiguous().transpose(1, 2), k, p, c, s), "q needs"),
        (lambda q, k, p, c, s: (q, k, p.int(), c, s), "positions must be int64"),
        (lambda q, k, p, c, s: (q, k, p[:-1], c, s), "positions must be"),
        (lambda q, k, p, c, s: (q, k, p, c[:, :4], s), "cos must be float32"),
        (lambda q, k, p, c, s: (q, k, p, c, s.double()), "sin must be float32"),
        (lambda q, k, p, c, s: (q, k, p, c, s[:8]), "sin must have cos's shape"),
    ],
)
def test_bad_arguments_name_the_field(change, message, dev):
    q, k, _ = fused_qkv(3, 4, 2, 16, torch.bfloat16, dev)
    cos, sin = caches(16, dev)
    args = change(q, k, positions_for(3, dev), cos, sin)
    with pytest.raises(ValueError, match=f"rotary_embedding: {message}"):
        rotary_embedding(*args)


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 64, 4096])
def test_llama_8b_shapes_on_gpu(num_tokens, cuda):
    """32 query / 8 KV heads of 128 from a fused qkv output, bf16, Llama 3.1 rope scaling, 8k positions."""
    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    cos, sin = caches(128, cuda, max_positions=8192, **rope)
    q, k, _ = fused_qkv(num_tokens, 32, 8, 128, torch.bfloat16, cuda, seed=3)
    positions = torch.randint(0, 8192, (num_tokens,), generator=torch.Generator().manual_seed(3)).to(cuda)
    expected_q, expected_k = rotary_embedding_reference(q, k, positions, cos, sin)
    rotary_embedding(q, k, positions, cos, sin)
    assert torch.equal(q, expected_q) and torch.equal(k, expected_k)
