"""The Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2): GQA, rotary, SwiGLU, RMSNorm.

Tokens of all sequences of a step are laid out back to back ([num_tokens, hidden]); the
attention implementation reads the step's AttentionMetadata and the layer's paged cache.
"""

from __future__ import annotations

import torch
from torch import nn

from backends.llm.attention.metadata import AttentionMetadata
from backends.llm.layers.linear import FusedLinear
from backends.llm.layers.norms import RMSNorm
from backends.llm.models.model_config import DecoderConfig
from backends.llm.models.rotary import RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig, attention_impl, dtype: torch.dtype):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = FusedLinear(config.hidden_size, [q_size, kv_size, kv_size], config.qkv_bias, dtype)
        self.o_proj = FusedLinear(q_size, [config.hidden_size], config.o_bias, dtype)
        self.attention_impl = attention_impl

    def forward(self, hidden, positions, rotary: RotaryEmbedding, kv_cache, metadata: AttentionMetadata,
                kv_scales: torch.Tensor | None = None):
        # kv_scales: [2, num_blocks, block_size, num_kv_heads] float32 for an FP8 cache (Triton attention only)
        num_tokens = hidden.shape[0]
        q, k, v = self.qkv_proj(hidden).split(
            [self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.num_kv_heads * self.head_dim], -1
        )
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        q, k = rotary(positions, q, k)
        if kv_scales is None:
            out = self.attention_impl.forward(q, k, v, kv_cache, metadata)
        else:
            out = self.attention_impl.forward(q, k, v, kv_cache, metadata, kv_scales=kv_scales)
        return self.o_proj(out.reshape(num_tokens, -1))


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig, dtype: torch.dtype):
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = FusedLinear(config.hidden_size, [size, size], config.mlp_bias, dtype)
        self.down_proj = FusedLinear(size, [config.hidden_size], config.mlp_bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(nn.functional.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, attention_impl, dtype: torch.dtype):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.self_attn = Attention(config, attention_impl, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.mlp = MLP(config, dtype)

    def forward(self, hidden, residual, positions, rotary, kv_cache, metadata, kv_scales=None):
        normed, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(normed, positions, rotary, kv_cache, metadata, kv_scales)
        normed, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(normed), residual


class DecoderForCausalLM(nn.Module):
    """Weights are created empty; `backends.llm.models.weight_loader` fills them."""

    def __init__(self, config: DecoderConfig, attention_impl, dtype: torch.dtype, max_positions: int):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(config, attention_impl, dtype) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.rotary = RotaryEmbedding(config, max_positions)
        if not config.tie_word_embeddings:
            self.lm_head_weight = nn.Parameter(torch.empty(config.vocab_size, config.hidden_size, dtype=dtype),
                                               requires_grad=False)

    def forward(self, token_ids, positions, kv_caches: list[torch.Tensor], metadata: AttentionMetadata,
                kv_scales: list[torch.Tensor | None] | None = None):
        # token_ids, positions: [num_tokens] -> hidden states [num_tokens, hidden_size]
        # kv_scales: one per layer for an FP8 KV cache (None: caches in the model's dtype)
        hidden = self.embed_tokens(token_ids)
        residual = None
        scales = kv_scales if kv_scales is not None else [None] * len(self.layers)
        for layer, kv_cache, layer_scales in zip(self.layers, kv_caches, scales):
            hidden, residual = layer(hidden, residual, positions, self.rotary, kv_cache, metadata, layer_scales)
        hidden, _ = self.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [num_rows, hidden_size] -> float32 logits [num_rows, vocab_size]
        weight = self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head_weight
        return nn.functional.linear(hidden, weight).float()
