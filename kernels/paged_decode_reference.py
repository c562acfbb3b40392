"""The plain-torch reference of paged decode attention (kernels/paged_decode_attention.py), for tests and benchmarks."""

from __future__ import annotations

import torch

from modelgate.kernels.reshape_and_cache import gather_kv_reference


def paged_decode_attention_reference(
    q: torch.Tensor,  # [num_seqs, num_heads, head_dim]
    kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor,  # [num_seqs] int32
    *,
    kv_scales: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:  # [num_seqs, num_heads, head_dim] q's dtype
    """Plain torch: gather each sequence's K/V (dequantized) into a padded batch, masked softmax in fp32."""
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = kv_cache.shape[3]
    lens = [int(n) for n in context_lens.tolist()]
    max_len = max(lens, default=0)
    keys = q.new_zeros((num_seqs, max_len, num_kv_heads, head_dim), dtype=torch.float32)
    values = torch.zeros_like(keys)
    for index, length in enumerate(lens):
        keys[index, :length], values[index, :length] = gather_kv_reference(
            kv_cache, kv_scales, block_tables[index], length
        )
    group = num_heads // num_kv_heads
    scale = softmax_scale if softmax_scale is not None else head_dim**-0.5
    grouped_q = q.float().view(num_seqs, num_kv_heads, group, head_dim)
    scores = torch.einsum("skgd,snkd->skgn", grouped_q, keys) * scale
    positions = torch.arange(max_len, device=q.device)
    lengths = context_lens.to(q.device).long()[:, None]
    visible = positions[None, :] < lengths  # [num_seqs, max_len]
    if sliding_window is not None:
        visible &= positions[None, :] >= lengths - sliding_window
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an empty context gives 0, as the kernel does
    out = torch.einsum("skgn,snkd->skgd", probs, values)
    return out.reshape(num_seqs, num_heads, head_dim).to(q.dtype)
